//! The house rules the code keeps (STYLE.md, "Small pieces"): no function in `src/` over
//! [`MAX_LINES`] lines (tests and benchmarks: [`MAX_TEST_LINES`]), none with more than
//! [`MAX_PARAMS`] parameters (issue #18 brought every older one within them), and no SQL in
//! `src/` outside `store/` ("only `store/` contains SQL").
//!
//! A function's lines run from the line of its `fn` to its closing brace. Comments, string
//! and character literals are blanked before braces and commas are counted.

use std::path::PathBuf;

/// Lines a function of `src/` may have.
const MAX_LINES: usize = 60;
/// Lines a test or benchmark function may have.
const MAX_TEST_LINES: usize = 100;
/// Parameters a function may take (`self` not counted).
const MAX_PARAMS: usize = 5;

/// One function found in a file.
#[derive(Debug)]
struct Function {
    /// The file, relative to the crate's root.
    file: String,
    name: String,
    lines: usize,
    params: usize,
    /// A test, a benchmark, or a helper of either.
    test: bool,
}

/// `text` with comments, strings and character literals blanked (line breaks kept).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let end = literal_end(&chars, i);
        if end > i {
            for &c in &chars[i..end] {
                blank(&mut out, c);
            }
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Where the comment or literal starting at `i` ends (`i` when none starts there).
fn literal_end(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    match (at(i), at(i + 1)) {
        ('/', '/') => (i..chars.len())
            .find(|&k| at(k) == '\n')
            .unwrap_or(chars.len()),
        ('/', '*') => {
            let mut depth = 0;
            let mut k = i;
            while k < chars.len() {
                match (at(k), at(k + 1)) {
                    ('/', '*') => (depth, k) = (depth + 1, k + 2),
                    ('*', '/') => (depth, k) = (depth - 1, k + 2),
                    _ => k += 1,
                }
                if depth == 0 {
                    return k;
                }
            }
            chars.len()
        }
        ('r', '"' | '#') if i == 0 || !ident(at(i - 1)) => {
            let hashes = (i + 1..chars.len()).take_while(|&k| at(k) == '#').count();
            if at(i + 1 + hashes) != '"' {
                return i; // a raw identifier
            }
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let body: String = chars[i + 2 + hashes..].iter().collect();
            body.find(&close).map_or(chars.len(), |at| {
                i + 2 + hashes + body[..at].chars().count() + close.len()
            })
        }
        ('"', _) => {
            let mut k = i + 1;
            while k < chars.len() && at(k) != '"' {
                k += if at(k) == '\\' { 2 } else { 1 };
            }
            k + 1
        }
        ('\'', '\\') => (i + 2..chars.len())
            .find(|&k| at(k) == '\'')
            .map_or(i, |k| k + 1),
        ('\'', _) if at(i + 2) == '\'' => i + 3,
        _ => i,
    }
}

/// The index of the bracket closing the one at `open` (`(`, `[`, `{`).
fn closing(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// How many parameters the list `code[open..=close]` names, `self` not counted.
fn parameters(code: &[char], open: usize, close: usize) -> usize {
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for k in open + 1..close {
        let c = code[k];
        match c {
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '>' if code[k - 1] != '-' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(part) = parts.last_mut() {
            part.push(c);
        }
    }
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let head = p.split(':').next().unwrap_or_default().replace('&', " ");
            let words: Vec<&str> = head
                .split_whitespace()
                .filter(|w| *w != "mut" && !w.starts_with('\''))
                .collect();
            words != ["self"]
        })
        .count()
}

/// The brace ranges of `#[cfg(test)]` modules in `code`.
fn test_modules(code: &[char]) -> Vec<(usize, usize)> {
    let text: String = code.iter().collect();
    let mut ranges = Vec::new();
    for (at, _) in text.match_indices("#[cfg(test)]") {
        let rest = &text[at..];
        let Some(module) = rest.find("mod ") else {
            continue;
        };
        let (Some(brace), Some(semi)) = (rest.find('{'), rest.find(';')) else {
            continue;
        };
        if module < brace && brace < semi {
            let open = text[..at + brace].chars().count();
            if let Some(close) = closing(code, open) {
                ranges.push((open, close));
            }
        }
    }
    ranges
}

/// The functions of one file (`file`: its path relative to the crate).
fn functions(file: &str, text: &str) -> Vec<Function> {
    let cleaned = code_only(text);
    let code: Vec<char> = cleaned.chars().collect();
    let line_of = |k: usize| code[..k].iter().filter(|&&c| c == '\n').count();
    let lines: Vec<&str> = cleaned.lines().collect();
    let test_file =
        file.starts_with("tests/") || file.starts_with("benches/") || file.ends_with("tests.rs");
    let modules = test_modules(&code);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut k = 0;
    while k + 3 < code.len() {
        let starts_fn = code[k] == 'f'
            && code[k + 1] == 'n'
            && code[k + 2].is_whitespace()
            && (k == 0 || !ident(code[k - 1]));
        if !starts_fn {
            k += 1;
            continue;
        }
        let name_start = (k + 2..code.len())
            .find(|&j| !code[j].is_whitespace())
            .unwrap_or(code.len());
        let name: String = code[name_start..]
            .iter()
            .take_while(|&&c| ident(c))
            .collect();
        let Some(open) = (name_start..code.len()).find(|&j| code[j] == '(') else {
            break;
        };
        let Some(close) = closing(&code, open) else {
            break;
        };
        let Some(body) = (close..code.len()).find(|&j| code[j] == '{' || code[j] == ';') else {
            break;
        };
        k += 2;
        if name.is_empty() || code[body] == ';' {
            continue;
        }
        let Some(end) = closing(&code, body) else {
            break;
        };
        let line = line_of(k);
        let attributes = lines[..line]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with("#[") || l.trim().is_empty());
        let test = test_file
            || modules.iter().any(|&(from, to)| from < k && k < to)
            || attributes.into_iter().any(|l| l.contains("test"));
        found.push(Function {
            file: file.to_string(),
            name,
            lines: line_of(end) - line + 1,
            params: parameters(&code, open, close),
            test,
        });
    }
    found
}

/// Every function of `src/`, `tests/` and `benches/`.
fn all_functions() -> Vec<Function> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        crate::docs_tests::rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let file = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        all.extend(functions(&file, &text));
    }
    all
}

/// The functions over their limit, each with its size and the limit.
fn breaches(all: &[Function], measure: fn(&Function) -> (usize, usize)) -> Vec<String> {
    all.iter()
        .filter_map(|function| {
            let (size, limit) = measure(function);
            (size > limit).then(|| {
                format!(
                    "{} {}: {size} (the limit is {limit})",
                    function.file, function.name
                )
            })
        })
        .collect()
}

#[test]
fn no_function_grows_past_the_line_limit() {
    let lines = |f: &Function| (f.lines, if f.test { MAX_TEST_LINES } else { MAX_LINES });
    let problems = breaches(&all_functions(), lines);
    assert!(
        problems.is_empty(),
        "functions too long:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_function_takes_more_than_five_parameters() {
    let params = |f: &Function| (f.params, MAX_PARAMS);
    let problems = breaches(&all_functions(), params);
    assert!(
        problems.is_empty(),
        "too many parameters:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_measures_functions_and_parameters() {
    let text = "/// fn doc() {}\nfn one(a: u8, b: Vec<(u8, u8)>, f: impl Fn(u8) -> u8) {\n    let s = \"}\";\n    let c = '{';\n}\n\nimpl X {\n    pub async fn two<'a>(&'a mut self, x: &'a str) -> u8 { 1 }\n    fn decl(&self);\n}\n#[cfg(test)]\nmod tests {\n    fn helper(r: &str) { let _ = r#\"{\"#; }\n}\n";
    let found = functions("src/x.rs", text);
    let seen: Vec<(&str, usize, usize, bool)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.lines, f.params, f.test))
        .collect();
    assert_eq!(
        seen,
        [
            ("one", 4, 3, false),
            ("two", 1, 1, false),
            ("helper", 1, 1, true)
        ]
    );
}

#[test]
fn a_function_over_a_limit_is_named_with_its_size() {
    let function = |name: &str, lines| Function {
        file: "src/x.rs".into(),
        name: name.into(),
        lines,
        params: 0,
        test: false,
    };
    let all = [function("fits", 60), function("long", 61)];
    let lines = |f: &Function| (f.lines, MAX_LINES);
    assert_eq!(
        breaches(&all, lines),
        ["src/x.rs long: 61 (the limit is 60)"]
    );
}

/// Where a string literal of `text` starts with a SQL statement's first words (`SELECT `,
/// `INSERT INTO `, ...): the line numbers.
fn sql_literals(text: &str) -> Vec<usize> {
    const STARTS: [&str; 6] = [
        "SELECT ",
        "INSERT INTO ",
        "UPDATE sys_",
        "UPDATE dingsync_",
        "DELETE FROM ",
        "CREATE TABLE ",
    ];
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.match_indices('"').any(|(at, _)| {
                !line[..at].ends_with('\\')
                    && STARTS.iter().any(|start| line[at + 1..].starts_with(start))
            })
        })
        .map(|(n, _)| n + 1)
        .collect()
}

#[test]
fn no_sql_outside_the_store() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    crate::docs_tests::rust_files(&root.join("src"), &mut files);
    let store = root.join("src/store");
    let found: Vec<String> = files
        .iter()
        // The store, and this file, which names the statements' first words.
        .filter(|path| !path.starts_with(&store) && !path.ends_with("src/house_tests.rs"))
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            sql_literals(&text)
                .into_iter()
                .map(move |line| format!("{}:{line}", path.display()))
        })
        .collect();
    assert!(found.is_empty(), "SQL outside src/store/: {found:?}");
    assert_eq!(
        sql_literals("let a = \"SELECT 1\";\nprintln!(\"run \\\"UPDATE sys_user SET x\\\"\");"),
        [1],
        "a statement's literal is found; one quoted inside a message is not"
    );
}

/// Prints every function over a limit with its size (`cargo test --lib house_tests::sizes --
/// --ignored --nocapture`): what to split next.
#[test]
#[ignore]
fn sizes() {
    for f in all_functions() {
        let limit = if f.test { MAX_TEST_LINES } else { MAX_LINES };
        if f.lines > limit || f.params > MAX_PARAMS {
            println!(
                "{} {} lines {} params {}",
                f.file, f.name, f.lines, f.params
            );
        }
    }
}
