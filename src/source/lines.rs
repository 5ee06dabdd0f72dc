//! Line bookkeeping for YAML files: split a file into its documents (remembering where each starts) and find the
//! line of a field inside one document, so that errors found after parsing still name `file:line`.
//!
//! Both are deliberately textual: serde gives no positions for values once they are deserialized, and a config
//! file is small. [`key_line`] is a best effort that falls back to the document's first line.

/// One YAML document of a file: its text (including its `---` line, if any) and the file line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    /// 1-based line of the file on which `text` starts.
    pub start_line: usize,
    pub text: &'a str,
}

/// Splits a multi-document YAML text at its `---` (start) and `...` (end) markers.
///
/// Each chunk is parsed on its own, so a syntax error in one document does not hide errors in the others, and
/// each chunk's `start_line` turns a document-relative line into a file line. Chunks may hold only comments or
/// whitespace; the parser reports those as empty and the loader skips them.
pub(crate) fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut chunks = Vec::new();
    let (mut start_byte, mut start_line, mut offset) = (0usize, 1usize, 0usize);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        if is_marker(line, "---") {
            chunks.push(Chunk { start_line, text: &text[start_byte..offset] });
            (start_byte, start_line) = (offset, line_no);
        } else if is_marker(line, "...") {
            chunks.push(Chunk { start_line, text: &text[start_byte..offset] });
            (start_byte, start_line) = (offset + line.len(), line_no + 1);
        }
        offset += line.len();
    }
    chunks.push(Chunk { start_line, text: &text[start_byte..] });
    chunks.retain(|c| !c.text.trim().is_empty());
    chunks
}

/// A document marker: the three characters at column 0, then whitespace or the end of the line.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker).is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// The file line of the field at `path` (`spec.traffic.canaryWeight`, `spec.ports[1].port`) in a document.
///
/// Looks for each segment's key in turn, each search starting where the previous one matched, and answers the
/// line of the deepest key found; list indices are ignored. Falls back to the document's first line.
pub(crate) fn key_line(chunk: &Chunk<'_>, path: &str) -> usize {
    let lines: Vec<&str> = chunk.text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for segment in path.split('.') {
        let key = segment.split('[').next().unwrap_or(segment);
        if key.is_empty() {
            continue;
        }
        if let Some(i) = (from..lines.len()).find(|&i| line_has_key(lines[i], key)) {
            found = Some(i);
            from = i;
            let index = segment.split_once('[').and_then(|(_, rest)| rest.trim_end_matches(']').parse().ok());
            if let Some(item) = index.and_then(|n| list_item(&lines, i, n)) {
                found = Some(item);
                from = item;
            }
        }
    }
    chunk.start_line + found.unwrap_or_else(|| first_content_line(&lines))
}

/// The line of item `n` of the block list under the key on line `key_at` (`None` for a flow list `[...]` or a
/// list with fewer items).
fn list_item(lines: &[&str], key_at: usize, n: usize) -> Option<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_indent = indent(lines[key_at]);
    let mut item_indent = None;
    let mut seen = 0;
    for (j, line) in lines.iter().enumerate().skip(key_at + 1) {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let is_item = t == "-" || t.starts_with("- ");
        if indent(line) < key_indent || (indent(line) == key_indent && !is_item) {
            return None;
        }
        if is_item && *item_indent.get_or_insert(indent(line)) == indent(line) {
            if seen == n {
                return Some(j);
            }
            seen += 1;
        }
    }
    None
}

/// Index of the first line that is neither blank, a comment nor a document marker (0 if none).
fn first_content_line(lines: &[&str]) -> usize {
    lines
        .iter()
        .position(|l| {
            let t = l.trim();
            !(t.is_empty() || t.starts_with('#') || is_marker(l, "---"))
        })
        .unwrap_or(0)
}

/// Whether a line holds `key:` as a mapping key (block or flow style, optionally quoted), outside a comment.
fn line_has_key(line: &str, key: &str) -> bool {
    let code = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    if code.trim_start().starts_with('#') {
        return false;
    }
    code.match_indices(key).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let rest = &code[at + key.len()..];
        let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        let starts_ok = matches!(before, None | Some(' ' | '\t' | '{' | ',' | '"' | '\'' | '-'));
        let colon_ok =
            rest.strip_prefix(':').is_some_and(|after| after.is_empty() || after.starts_with(char::is_whitespace));
        starts_ok && colon_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "# comment\n---\na: 1\n---\nkind: X\nspec:\n  port: 1\n...\n";

    #[test]
    fn documents_split_at_markers_with_their_first_lines() {
        let chunks = split_documents(TWO);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0], Chunk { start_line: 1, text: "# comment\n" });
        assert_eq!(chunks[1], Chunk { start_line: 2, text: "---\na: 1\n" });
        assert_eq!(chunks[2].start_line, 4);
        assert!(chunks[2].text.ends_with("port: 1\n"));
    }

    #[test]
    fn a_document_without_markers_is_the_whole_text() {
        assert_eq!(split_documents("a: 1\n"), vec![Chunk { start_line: 1, text: "a: 1\n" }]);
        assert!(split_documents("").is_empty());
        assert_eq!(split_documents("----\n").len(), 1);
    }

    #[test]
    fn key_lines_follow_the_path() {
        let text = "---\nmetadata:\n  name: x\nspec:\n  # port: 9\n  name: y\n  traffic: {canaryWeight: 5}\n";
        let chunk = Chunk { start_line: 10, text };
        assert_eq!(key_line(&chunk, "spec.name"), 15);
        assert_eq!(key_line(&chunk, "metadata.name"), 12);
        assert_eq!(key_line(&chunk, "spec.traffic.canaryWeight"), 16);
        assert_eq!(key_line(&chunk, "spec.ports[0].port"), 13);
        assert_eq!(key_line(&chunk, "nothing"), 11);
        assert_eq!(key_line(&chunk, ""), 11);
        let list =
            "spec:\n  http:\n  - route:\n    - host: a\n  - name: b\n    route:\n    - host: c\n      weight: 1\n";
        let chunk = Chunk { start_line: 1, text: list };
        assert_eq!(key_line(&chunk, "spec.http[1].route[0].weight"), 8);
        assert_eq!(key_line(&chunk, "spec.http[1].name"), 5);
        assert_eq!(key_line(&chunk, "spec.http[0].route[0].host"), 4);
    }
}
