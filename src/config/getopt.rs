//! The command line as Server::Starter's Getopt::Long reads it: long options with one dash or
//! two, abbreviated to any unambiguous prefix, up to `--` or the program; rewritten to the full
//! two-dash names clap takes, with Getopt::Long's words for what it refuses (and the option a
//! typo was near).

use std::ffi::OsString;

/// Rewrites each option of `args` to its full two-dash name among `options` (long name, takes
/// a value); an unknown or ambiguous one is an error. The program's arguments are untouched.
pub fn rewrite(
    args: impl IntoIterator<Item = OsString>,
    options: &[(String, bool)],
) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    let mut args = args.into_iter().peekable();
    out.extend(args.next());
    let mut expect_value = false;
    while let Some(arg) = args.next() {
        if expect_value {
            expect_value = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            break;
        };
        if text == "--" || text == "-" || !text.starts_with('-') {
            out.push(arg);
            break;
        }
        let long = text.strip_prefix("--").unwrap_or(&text[1..]);
        let (name, value) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        if text == "-h" || text == "-V" {
            // clap's short help and version.
            out.push(arg);
            continue;
        }
        let (full, takes_value) = match status_compat(name, value, args.peek()) {
            Some(status_file) => status_file,
            None => resolve_option(options, name)?,
        };
        expect_value = takes_value && value.is_none();
        out.push(OsString::from(match value {
            Some(value) => format!("--{full}={value}"),
            None => format!("--{full}"),
        }));
    }
    out.extend(args);
    Ok(out)
}

/// The program's arguments that look like start_server's socket options (`--port=8080` after
/// the program): given there, they reach the program, not start_server.
pub fn misplaced_options(command: &[OsString]) -> Vec<String> {
    command
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| {
            let name = a.trim_start_matches('-').split('=').next().unwrap_or("");
            a.starts_with('-') && ["port", "path"].contains(&name)
        })
        .map(str::to_string)
        .collect()
}

/// The options part of a rewritten command line: up to `--` or the program.
pub fn options_of(args: &[OsString]) -> impl Iterator<Item = &OsString> {
    args.iter()
        .skip(1)
        .take_while(|a| a.to_str().is_some_and(|a| a != "--" && a.starts_with('-')))
}

/// `--status` is both the original's abbreviation of `--status-file` and the status command:
/// with a value (`--status=FILE`, `--status FILE`) it is `--status-file`, bare it is the
/// command (which takes no program). Its prefixes (`--stat`) stay `--status-file`'s.
fn status_compat(
    name: &str,
    value: Option<&str>,
    next: Option<&OsString>,
) -> Option<(String, bool)> {
    const STATUS_FILE: &str = "status-file";
    if !"status".starts_with(name) || name.len() < "sta".len() {
        return None;
    }
    let next_is_value = next
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('-'));
    if name != "status" || value.is_some() || next_is_value {
        Some((STATUS_FILE.to_string(), true))
    } else {
        Some(("status".to_string(), false))
    }
}

/// The option closest to a mistyped `name` (at most two edits away), if one is.
fn closest<'a>(options: &'a [(String, bool)], name: &str) -> Option<&'a str> {
    options
        .iter()
        .map(|(long, _)| (edits(long, name), long.as_str()))
        .filter(|(distance, _)| *distance <= 2.min(name.len().saturating_sub(1)))
        .min()
        .map(|(_, long)| long)
}

/// The edit distance between `a` and `b` (insertions, deletions, substitutions, and swaps of
/// two neighbours, as typing mistakes go).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The option `name` stands for: an exact name, or the one name it is a prefix of.
fn resolve_option(options: &[(String, bool)], name: &str) -> Result<(String, bool), String> {
    if let Some(exact) = options.iter().find(|(long, _)| long == name) {
        return Ok(exact.clone());
    }
    let mut candidates: Vec<&(String, bool)> = options
        .iter()
        .filter(|(long, _)| !name.is_empty() && long.starts_with(name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(match closest(options, name) {
            Some(near) => format!("Unknown option: {name} (did you mean --{near}?)"),
            None => format!("Unknown option: {name}"),
        }),
        _ => {
            candidates.sort();
            let names: Vec<&str> = candidates.iter().map(|(long, _)| long.as_str()).collect();
            Err(format!("Option {name} is ambiguous ({})", names.join(", ")))
        }
    }
}
