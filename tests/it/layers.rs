//! The product's module graph has no circles, at every level: among the top-level modules (`capture`,
//! `convert`, `server`, ...) and among the children of each module (`capture::wayland`,
//! `capture::screencopy`, ...). Built from the source itself: every `crate::` path (in `use` trees, braces
//! included, and inline) and every `super::` path outside comments, strings and `#[cfg(test)] mod tests`.
//! A reference from A to B counts as an edge between the two siblings under their deepest common ancestor
//! (a module using its parent's items, or its own children, is no edge). Run it alone with
//! `cargo test -p wl-webrtc --test it layers`; it prints the graph and fails naming each circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path of a source file: src/lib.rs → [], src/capture/mod.rs → [capture], src/a/b.rs → [a, b].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(Vec<String>, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            if rel == Path::new("main.rs") {
                continue; // the binary is its own crate: `wl_webrtc::`, not `crate::`
            }
            let module = module_of(rel);
            if module.last().is_some_and(|m| m == "tests") {
                continue; // a test module in its own file: dev-time code, like the inline `mod tests`
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((module, text));
        }
    }
}

/// The code without comments, string/char literals and the trailing `#[cfg(test)] mod tests { ... }`.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parse a path (or use tree) starting at `i`, after a `crate::`/`super::` prefix: pushes every full path
/// (`a::b::c`, or each leaf of `a::{b, c::{d, self}}`) onto `out`, each prefixed with `prefix`.
fn paths_at(s: &[u8], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    let mut i = skip_ws(s, i);
    loop {
        if s.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = skip_ws(s, i);
                match s.get(i) {
                    Some(b'}') => return i + 1,
                    Some(b',') => i += 1,
                    None => return i,
                    _ => i = paths_at(s, i, &path, out),
                }
            }
        }
        let (id, next) = ident_at(s, i);
        if id.is_empty() {
            break;
        }
        if id != "self" {
            path.push(id);
        }
        i = next;
        if s.get(i) == Some(&b':') && s.get(i + 1) == Some(&b':') {
            i += 2;
        } else {
            break;
        }
    }
    out.push(path);
    i
}

/// Every module path `module` refers to (resolved against the known modules).
fn references(module: &[String], code: &str, modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let s = code.as_bytes();
    let mut raw = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        if boundary && s[i..].starts_with(b"crate::") {
            i = paths_at(s, i + 7, &[], &mut raw);
        } else if boundary && s[i..].starts_with(b"super::") {
            // `super` of a/b is a; chains (`super::super::`) climb further.
            let mut base = module.to_vec();
            let mut j = i;
            while s[j..].starts_with(b"super::") {
                base.pop();
                j += 7;
            }
            i = paths_at(s, j, &base, &mut raw);
        } else {
            i += 1;
        }
    }
    raw.into_iter()
        .filter_map(|p| (0..=p.len()).rev().map(|n| p[..n].to_vec()).find(|m| modules.contains(m)))
        .collect()
}

/// The circles of a directed graph, each as its member nodes (strongly connected components of 2+ nodes or
/// with a self-loop), by Tarjan's algorithm.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        for u in w.graph.get(v).into_iter().flatten() {
            if !w.index.contains_key(u.as_str()) {
                visit(w, u);
                let lu = w.low[u.as_str()];
                let lv = w.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lu);
            } else if w.on_stack.contains(u.as_str()) {
                let iu = w.index[u.as_str()];
                let lv = w.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iu);
            }
        }
        if w.low[v] == w.index[v] {
            let mut scc = Vec::new();
            while let Some(x) = w.stack.pop() {
                w.on_stack.remove(x);
                scc.push(x.to_owned());
                if x == v {
                    break;
                }
            }
            let self_loop = w.graph.get(v).is_some_and(|e| e.contains(v));
            if scc.len() > 1 || self_loop {
                scc.sort();
                w.found.push(scc);
            }
        }
    }
    let mut w = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

/// Sibling graphs: for each parent module ("" = the crate root), the edges among its children.
fn sibling_graphs(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    sources(src, src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, text) in &files {
        for target in references(module, &code_only(text), &modules) {
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(from), Some(to)) = (module.get(common), target.get(common)) else {
                continue; // within one module, or to an ancestor or descendant
            };
            let parent = module[..common].join("::");
            graphs.entry(parent).or_default().entry(from.clone()).or_default().insert(to.clone());
        }
    }
    graphs
}

#[test]
fn checker_finds_paths_in_use_trees_and_circles() {
    let modules: BTreeSet<Vec<String>> = [vec![], vec!["a".into()], vec!["a".into(), "b".into()], vec!["c".into()]]
        .into_iter()
        .map(|m: Vec<String>| m)
        .collect();
    let code = code_only(
        "use crate::{a::{b::{self, X}, Y}, c};\n// crate::z::Q in a comment\nlet s = \"crate::c\"; super::Z;",
    );
    let refs = references(&["a".into(), "b".into()], &code, &modules);
    let want: BTreeSet<Vec<String>> = [vec!["a".into()], vec!["a".into(), "b".into()], vec!["c".into()]].into();
    assert_eq!(refs, want);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("x".to_owned(), ["y".to_owned()].into()),
        ("y".to_owned(), ["z".to_owned()].into()),
        ("z".to_owned(), ["x".to_owned()].into()),
        ("w".to_owned(), ["x".to_owned()].into()),
    ]
    .into();
    assert_eq!(circles(&g), vec![vec!["x".to_owned(), "y".to_owned(), "z".to_owned()]]);
}

#[test]
fn product_modules_have_no_dependency_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graphs = sibling_graphs(&src);
    assert!(graphs.get("").is_some_and(|g| g.len() > 5), "the top-level graph was read: {graphs:?}");
    let mut problems = Vec::new();
    for (parent, graph) in &graphs {
        let name = if parent.is_empty() { "crate" } else { parent };
        for (from, to) in graph {
            eprintln!("{name}: {from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
        }
        for circle in circles(graph) {
            let edges: Vec<String> = circle
                .iter()
                .flat_map(|a| graph[a].iter().filter(|b| circle.contains(b)).map(move |b| format!("{a} -> {b}")))
                .collect();
            problems.push(format!("in {name}: {{{}}} ({})", circle.join(", "), edges.join("; ")));
        }
    }
    assert!(problems.is_empty(), "dependency circles among modules:\n{}", problems.join("\n"));
}
