//! Bounds checked on a config file's text before the YAML parser sees it, in one linear pass: its size and how
//! deeply it nests. A YAML parser spends time growing with the square of the depth before it refuses a deeply
//! nested document (a 200 KB file held reloads for ~56 s), so the depth is measured here first.
//!
//! ```text
//!  flow   [ [ { ...   depth = open brackets (outside quotes and comments)
//!  block  a:\n  b:\n    c:  depth = indentation levels stacked, plus one per `- ` starting a line's content
//! ```
//! Kubernetes objects nest a dozen levels; [`MAX_DEPTH`] leaves room for the deepest real ones.

/// Deepest nesting accepted (flow brackets and block levels together).
pub const MAX_DEPTH: usize = 64;
/// Largest config file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Why a text is refused: the 1-based line and the message.
pub type Refusal = (usize, String);

/// Refuses a text larger than [`MAX_FILE_BYTES`] or nested deeper than [`MAX_DEPTH`].
pub fn check(text: &str) -> Result<(), Refusal> {
    if text.len() > MAX_FILE_BYTES {
        let msg = format!("the file is {} bytes; the limit is {MAX_FILE_BYTES}", text.len());
        return Err((1, msg));
    }
    let mut blocks: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (i, line) in text.lines().enumerate() {
        let depth = if flow == 0 { block_depth(line, &mut blocks) } else { blocks.len() };
        flow = flow_depth(line, flow);
        if depth + flow > MAX_DEPTH {
            let msg = format!("nested more than {MAX_DEPTH} levels deep; refused before parsing");
            return Err((i + 1, msg));
        }
    }
    Ok(())
}

/// The block nesting of a line: the stack of indentations still open, plus the sequence dashes that start its
/// content (`- - a`). Blank and comment lines keep the stack as it is.
fn block_depth(line: &str, stack: &mut Vec<usize>) -> usize {
    let content = line.trim_start_matches(' ');
    if content.is_empty() || content.starts_with('#') || line.starts_with("---") || line.starts_with("...") {
        return stack.len();
    }
    let indent = line.len() - content.len();
    while stack.last().is_some_and(|&top| top >= indent) {
        stack.pop();
    }
    stack.push(indent);
    let mut dashes = 0;
    let mut rest = content;
    while let Some(r) = rest.strip_prefix("- ") {
        dashes += 1;
        rest = r.trim_start_matches(' ');
    }
    stack.len() + dashes
}

/// The flow-bracket depth after a line, from `depth` before it; quoted text and comments do not count. Works on
/// bytes: every character it looks for is ASCII, and no byte of a multi-byte UTF-8 character is.
fn flow_depth(line: &str, mut depth: usize) -> usize {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut prev_space = true;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' if prev_space => break,
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev_space = c == b' ' || c == b'\t';
        i += 1;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_objects_pass() {
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      \
                          - name: a\n        env:\n        - name: X\n          valueFrom:\n            fieldRef: \
                          {fieldPath: \"metadata.name\"}\n";
        assert_eq!(check(deployment), Ok(()));
        assert_eq!(check("a: \"[[[[\" # {{{{\nb: '[''['\n"), Ok(()), "brackets in strings and comments");
    }

    #[test]
    fn deep_flow_and_block_nesting_is_refused_fast() {
        let flow = format!("a: {}", "[".repeat(1_000_000));
        let started = std::time::Instant::now();
        let (line, msg) = check(&flow).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(line, 1);
        assert!(msg.contains("nested more than 64"), "{msg}");
        let block: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(check(&block).unwrap_err().0, 65);
        let dashes = format!("a:\n{}x\n", "- ".repeat(70));
        assert_eq!(check(&dashes).unwrap_err().0, 2);
    }
}
