//! Java `.properties` text (as `java.util.Properties.load` reads it): `#` and `!` comment
//! lines, `key=value`, `key: value` or `key value`, a trailing `\` continuing the line, and
//! `\`-escapes. Used for Debezium's configuration files and its `tracingspancontext` column.

/// The `(key, value)` pairs of `text`, in order (a repeated key appears each time; the last
/// one wins in Java).
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with(['#', '!'])) {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        out.push(split(&logical));
        logical.clear();
    }
    if !logical.is_empty() {
        out.push(split(&logical));
    }
    out
}

/// One logical line as (key, value): the key ends at the first unescaped `=`, `:` or
/// whitespace; escapes are undone in both.
fn split(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars();
    let mut escaped = false;
    for c in chars.by_ref() {
        match (escaped, c) {
            (true, c) => {
                key.push(unescape(c));
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, '=' | ':') => break,
            (false, c) if c.is_whitespace() => break,
            (false, c) => key.push(c),
        }
    }
    let rest: String = chars.collect();
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix(['=', ':'])
        .map(str::trim_start)
        .unwrap_or(rest);
    let mut value = String::new();
    let mut escaped = false;
    for c in rest.trim_end().chars() {
        match (escaped, c) {
            (true, c) => {
                value.push(unescape(c));
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, c) => value.push(c),
        }
    }
    (key, value)
}

fn unescape(c: char) -> char {
    match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\x0c',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_separators_escapes_and_continuations() {
        let text =
            "# comment\n! also\n\na=1\nb : 2\nc 3\nd\\:e=x\\=y\nlong=one,\\\n    two\nempty=\n";
        let pairs = parse(text);
        let p: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            p,
            [
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d:e", "x=y"),
                ("long", "one,two"),
                ("empty", "")
            ]
        );
    }
}
