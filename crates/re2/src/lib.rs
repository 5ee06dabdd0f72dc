//! Google RE2, the regular-expression engine Envoy runs, compiling a pattern the way Envoy does: so Sluice can
//! refuse, with RE2's own words, a regex Envoy would refuse (look-arounds, back-references, repetitions past
//! 1000, …) and measure its program size against Envoy's limit, before any proxy sees it.
//!
//! ```text
//!  compile("a(?=b)") ──FFI──▶ re2::RE2(pattern, RE2::Quiet) ──▶ Err("invalid perl operator: (?=")
//!  compile("[a-z]+") ──FFI──▶ … ──▶ Ok(Compiled { program_size: 7 })
//! ```
//! RE2 is Debian's (`libre2-dev`), linked statically; Envoy bundles a newer RE2 whose program sizes can differ by
//! a few instructions at most for the same pattern.

use std::ffi::{CStr, c_char, c_int};

/// A pattern RE2 compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// RE2's `ProgramSize()`: Envoy refuses a pattern above `re2.max_program_size.error_level` (default 100).
    pub program_size: u32,
}

#[allow(unsafe_code)]
unsafe extern "C" {
    fn sluice_re2_compile(
        pattern: *const c_char,
        pattern_len: usize,
        program_size: *mut c_int,
        error: *mut c_char,
        error_cap: usize,
    ) -> c_int;
}

/// Compiles `pattern` with RE2's options as Envoy sets them; `Err` holds RE2's message.
pub fn compile(pattern: &str) -> Result<Compiled, String> {
    let mut size: c_int = 0;
    let mut error = [0 as c_char; 512];
    // SAFETY: the pointers are valid for the lengths given for the whole call (the pattern's bytes, one int, the
    // error buffer); the C++ side reads `pattern_len` bytes (no terminator needed), writes one int and at most
    // `error_cap` bytes including a terminating NUL, and keeps no pointer after it returns.
    #[allow(unsafe_code)]
    let ok = unsafe {
        sluice_re2_compile(pattern.as_ptr().cast(), pattern.len(), &mut size, error.as_mut_ptr(), error.len())
    };
    if ok == 1 {
        return Ok(Compiled { program_size: u32::try_from(size).unwrap_or(u32::MAX) });
    }
    // SAFETY: the C++ side NUL-terminated what it wrote within the buffer (and the buffer is zeroed).
    #[allow(unsafe_code)]
    let message = unsafe { CStr::from_ptr(error.as_ptr()) };
    Err(message.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_re2_refuses_is_refused_with_its_message() {
        for (pattern, says) in [
            ("a(?=b)", "invalid perl operator"),
            ("(a)\\1", "invalid escape sequence"),
            ("(ab", "missing )"),
            ("a{1001}", "invalid repetition size"),
            ("a{1000}{1000}", "bad repetition operator"),
            ("[z-a]", "invalid character class range"),
        ] {
            let e = compile(pattern).expect_err(pattern);
            assert!(e.contains(says), "{pattern}: {e}");
        }
    }

    #[test]
    fn program_sizes_grow_with_the_pattern() {
        let small = compile("abc").unwrap().program_size;
        let big = compile("[a-z]{200}").unwrap().program_size;
        assert!(small < 10, "{small}");
        assert!(big > 100, "{big}: past Envoy's default limit");
        assert!(compile("a\0b").is_ok(), "a NUL byte is a literal, not the end");
    }
}
