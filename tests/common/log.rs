//! The tracing output of a test binary, captured so a test can assert on what Sluice logged (and echoed to stderr,
//! so `--nocapture` still shows it).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Installs the capturing subscriber once per test binary and returns the shared buffer.
pub fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Tee(buf.clone());
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
        buf
    })
    .clone()
}

#[derive(Clone)]
struct Tee(Arc<Mutex<Vec<u8>>>);

impl Write for Tee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
