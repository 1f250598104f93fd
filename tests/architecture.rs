//! The shape of `src/`, read from the code's own imports, as `docs/ARCHITECTURE.md` draws it:
//! the folders stand on floors and import only downwards; no circle of files runs through two
//! folders; files stay small. A change that breaks the shape fails here, naming the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level room of `src/` and its floor: a room imports only rooms on lower floors (and
/// itself). `error.rs` and `vocab/` are the ground; `main.rs` the top.
const FLOORS: &[(&str, u32)] = &[
    ("error.rs", 0),
    ("vocab", 0),
    ("supervisor", 1),
    ("wire", 1),
    ("fs", 1),
    ("config", 2),
    ("sockets", 3),
    ("client", 4),
    ("server", 4),
    ("main.rs", 5),
];

/// Folders whose files may import each other in a circle: the supervisor is one type whose
/// `impl` is split by concern over its files, each of which also defines that concern's state.
const ONE_TYPE_FOLDERS: &[&str] = &["src/supervisor"];

/// The longest a file may be, without its tests.
const MAX_LINES: usize = 600;

/// The longest an event loop file may be: the loop dispatches, it does not do the work.
const MAX_LOOP_LINES: usize = 400;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/server/log/mod.rs` is `server::log`.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main") {
        parts.pop();
    }
    parts
}

/// The code without its test modules and comments.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.next() {
                // A test module written here: the rest of the file is tests.
                Some(next) if next.trim_end().ends_with('{') => break,
                // `mod tests;` in a file of its own, or one item: skipped.
                _ => continue,
            }
        }
        let line = line.split("//").next().unwrap_or("");
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let (prefix, inner) = (&path[..open], &path[open + 1..path.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// Every path the code names: `use` items and `crate::` paths in expressions.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let item: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
        paths.extend(expand(&item));
    }
    for (at, _) in code.match_indices("crate::") {
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(path);
    }
    paths
}

struct Tree {
    files: Vec<PathBuf>,
    by_module: BTreeMap<Vec<String>, PathBuf>,
}

impl Tree {
    fn read() -> Tree {
        let mut files = Vec::new();
        rust_files(&src(), &mut files);
        files.sort();
        let by_module = files.iter().map(|f| (module_of(f), f.clone())).collect();
        Tree { files, by_module }
    }

    /// The file a path leads into (the longest module prefix that is a file).
    fn resolve(&self, segments: &[String]) -> Option<&PathBuf> {
        (1..=segments.len())
            .rev()
            .find_map(|k| self.by_module.get(&segments[..k]))
    }

    /// The files each file imports (itself excluded).
    fn imports(&self) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut edges = BTreeMap::new();
        for file in &self.files {
            let text = std::fs::read_to_string(file).expect("read a source file");
            let module = module_of(file);
            let mut targets = BTreeSet::new();
            for path in paths_in(&code_of(&text)) {
                let path = path.split(" as ").next().unwrap_or("").to_string();
                let mut segments: Vec<String> = path.split("::").map(str::to_string).collect();
                let absolute = match segments.first().map(String::as_str) {
                    Some("crate") => segments.split_off(1),
                    Some("super") => {
                        let mut base = module.clone();
                        base.pop();
                        while segments.first().is_some_and(|s| s == "super") {
                            segments.remove(0);
                        }
                        base.extend(segments);
                        base
                    }
                    Some("self") => module
                        .iter()
                        .cloned()
                        .chain(segments.split_off(1))
                        .collect(),
                    Some(first) => {
                        let mut child = module.clone();
                        child.push(first.to_string());
                        if !self.by_module.contains_key(&child) {
                            continue;
                        }
                        module.iter().cloned().chain(segments).collect()
                    }
                    None => continue,
                };
                if let Some(target) = self.resolve(&absolute).filter(|t| *t != file) {
                    targets.insert(target.clone());
                }
            }
            edges.insert(file.clone(), targets);
        }
        edges
    }
}

fn shown(file: &Path) -> String {
    file.strip_prefix(src().parent().expect("repository"))
        .unwrap_or(file)
        .display()
        .to_string()
}

fn floor_of(file: &Path) -> u32 {
    let relative = file.strip_prefix(src()).expect("under src");
    let room = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    FLOORS
        .iter()
        .find(|(name, _)| *name == room)
        .map(|(_, floor)| *floor)
        .unwrap_or_else(|| panic!("{} is in no floor of FLOORS: add it", shown(file)))
}

/// Strongly connected groups of more than one file (Tarjan's algorithm).
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn every_import_runs_down_a_floor_or_stays_in_its_room() {
    let tree = Tree::read();
    let mut upward = Vec::new();
    for (file, targets) in tree.imports() {
        for target in targets {
            if floor_of(&target) > floor_of(&file) {
                upward.push(format!("{} -> {}", shown(&file), shown(&target)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports up a floor:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_circle_of_files() {
    let tree = Tree::read();
    let edges = tree.imports();
    let bad: Vec<String> = circles(&edges)
        .into_iter()
        .filter(|group| {
            let folders: BTreeSet<&Path> = group.iter().filter_map(|f| f.parent()).collect();
            let allowed = folders.len() == 1
                && folders.iter().all(|folder| {
                    ONE_TYPE_FOLDERS
                        .iter()
                        .any(|allowed| folder.ends_with(allowed.trim_start_matches("src/")))
                });
            !allowed
        })
        .map(|group| {
            group
                .iter()
                .map(|f| shown(f))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "files importing each other:\n{}",
        bad.join("\n")
    );
    // The check sees circles: the supervisor's files do form one.
    assert!(
        circles(&edges)
            .iter()
            .any(|g| g.iter().any(|f| f.ends_with("supervisor/mod.rs"))),
        "the import reader missed the supervisor's own circle"
    );
}

#[test]
fn the_pure_core_and_the_shared_formats_stand_alone() {
    let tree = Tree::read();
    let rules: &[(&str, &[&str])] = &[
        ("vocab", &["vocab"]),
        ("error.rs", &[]),
        ("supervisor", &["supervisor", "vocab"]),
        ("wire", &["wire", "vocab", "error.rs"]),
        ("client", &["client", "config", "wire", "vocab", "error.rs"]),
    ];
    let mut bad = Vec::new();
    for (file, targets) in tree.imports() {
        let room = |f: &Path| {
            f.strip_prefix(src())
                .ok()
                .and_then(|r| r.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let Some((_, allowed)) = rules.iter().find(|(name, _)| *name == room(&file)) else {
            continue;
        };
        for target in targets {
            if !allowed.contains(&room(&target).as_str()) {
                bad.push(format!("{} -> {}", shown(&file), shown(&target)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports the rules forbid:\n{}",
        bad.join("\n")
    );
}

#[test]
fn files_stay_small_and_the_loop_only_dispatches() {
    let tree = Tree::read();
    let mut long = Vec::new();
    for file in &tree.files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        let lines = code_of(&text).lines().count();
        let limit = if file.components().any(|c| c.as_os_str() == "event_loop") {
            MAX_LOOP_LINES
        } else {
            MAX_LINES
        };
        if lines > limit {
            long.push(format!("{}: {lines} lines (at most {limit})", shown(file)));
        }
    }
    assert!(long.is_empty(), "files too long:\n{}", long.join("\n"));
}

#[test]
fn the_import_reader_reads_grouped_and_relative_imports() {
    assert_eq!(
        expand("crate::a::{b,c::{d,e}}"),
        ["crate::a::b", "crate::a::c::d", "crate::a::c::e"]
    );
    let code = code_of("use crate::x::Y;\n#[cfg(test)]\nmod tests {\nuse crate::z::W;\n}\n");
    assert_eq!(paths_in(&code), ["crate::x::Y", "crate::x::Y"]);
}
