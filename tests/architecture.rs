//! The layout of `src/` as a test: docs/ARCHITECTURE.md describes the folders a request travels
//! through; these checks keep them honest as code moves. A module may use the modules declared
//! inside it (a parent composes its children), but no chain of `use`s may lead back to where it
//! started, and the top-level folders form layers: no two of them use each other, directly or
//! through a third. Tests (`#[cfg(test)]`) are not counted: a test may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// Most lines of code (not blank, not comments, not tests) one file in `src/` may hold.
const MAX_LINES: usize = 500;

/// A module's path below `crate`, e.g. `["stream", "resume"]`; the crate root is empty.
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    syntax: syn::File,
}

fn modules() -> BTreeMap<ModPath, Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut name: ModPath = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(name.last().map(String::as_str), Some("mod" | "lib")) {
                name.pop();
            }
            // The binary is a crate of its own that uses the library from outside.
            if name == ["main"] {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            let syntax =
                syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            found.insert(name, Module { file: path, syntax });
        }
    }
    // A file that is a test module (`#[cfg(test)] mod tests;`) is a test: left out.
    let tests: Vec<ModPath> = found
        .iter()
        .flat_map(|(name, module)| {
            module
                .syntax
                .items
                .iter()
                .filter_map(move |item| match item {
                    syn::Item::Mod(m) if m.content.is_none() && is_test_only(&m.attrs) => {
                        let mut child = name.clone();
                        child.push(m.ident.to_string());
                        Some(child)
                    }
                    _ => None,
                })
        })
        .collect();
    for test in tests {
        found.remove(&test);
    }
    found
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// Every path a module names that starts with `crate`, `super` or `self`, made absolute.
struct Uses<'a> {
    here: &'a [String],
    found: Vec<ModPath>,
}

impl Uses<'_> {
    fn absolute(&self, segments: &[String]) -> Option<ModPath> {
        let (first, rest) = segments.split_first()?;
        let mut path: ModPath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.to_vec(),
            "super" => self.here[..self.here.len().checked_sub(1)?].to_vec(),
            _ => return None,
        };
        let mut rest = rest;
        while let Some(("super", tail)) = rest.split_first().map(|(s, t)| (s.as_str(), t)) {
            path.pop();
            rest = tail;
        }
        path.extend(rest.iter().cloned());
        Some(path)
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.record(prefix, Some(n.ident.to_string())),
            syn::UseTree::Rename(r) => self.record(prefix, Some(r.ident.to_string())),
            syn::UseTree::Glob(_) => self.record(prefix, None),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }

    fn record(&mut self, prefix: &[String], last: Option<String>) {
        let mut segments = prefix.to_vec();
        // `use crate::x::{self}` names `x` itself.
        if let Some(last) = last.filter(|l| l != "self") {
            segments.push(last);
        }
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test_only(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
        syn::visit::visit_path(self, path);
    }
}

/// Module-to-module edges: `from` uses something in `to`. A module's use of its own
/// descendants is composition, not an edge.
fn edges(modules: &BTreeMap<ModPath, Module>) -> BTreeSet<(ModPath, ModPath)> {
    let mut edges = BTreeSet::new();
    for (name, module) in modules {
        let mut uses = Uses {
            here: name,
            found: Vec::new(),
        };
        uses.visit_file(&module.syntax);
        for path in uses.found {
            // The longest prefix that is a module of its own.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| modules.contains_key(prefix))
                .unwrap();
            if !target.starts_with(name) {
                edges.insert((name.clone(), target));
            }
        }
    }
    edges
}

/// A cycle in the graph, if there is one, as the modules around it.
fn cycle<N: Ord + Clone>(edges: &BTreeSet<(N, N)>) -> Option<Vec<N>> {
    let mut next: BTreeMap<&N, Vec<&N>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from).or_default().push(to);
    }
    // Depth-first search; a node met again while still on the path closes a cycle.
    fn visit<'a, N: Ord>(
        node: &'a N,
        next: &BTreeMap<&'a N, Vec<&'a N>>,
        path: &mut Vec<&'a N>,
        done: &mut BTreeSet<&'a N>,
    ) -> Option<Vec<&'a N>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for to in next.get(node).into_iter().flatten().copied() {
            if let Some(found) = visit(to, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in next.keys().copied() {
        if let Some(found) = visit(node, &next, &mut Vec::new(), &mut done) {
            return Some(found.into_iter().cloned().collect());
        }
    }
    None
}

fn shown(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

#[test]
fn no_module_uses_its_way_back_to_itself() {
    let modules = modules();
    if let Some(cycle) = cycle(&edges(&modules)) {
        let names: Vec<_> = cycle.iter().map(shown).collect();
        panic!("import cycle: {} -> {}", names.join(" -> "), names[0]);
    }
}

#[test]
fn top_level_folders_are_layers() {
    let modules = modules();
    let folders: BTreeSet<(String, String)> = edges(&modules)
        .into_iter()
        .filter(|(from, to)| !from.is_empty() && !to.is_empty() && from[0] != to[0])
        .map(|(from, to)| (from[0].clone(), to[0].clone()))
        .collect();
    if let Some(cycle) = cycle(&folders) {
        let detail: Vec<String> = edges(&modules)
            .into_iter()
            .filter(|(from, to)| {
                !from.is_empty()
                    && !to.is_empty()
                    && cycle.contains(&from[0])
                    && cycle.contains(&to[0])
                    && from[0] != to[0]
            })
            .map(|(from, to)| format!("{} uses {}", shown(&from), shown(&to)))
            .collect();
        panic!(
            "the folders {} use each other:\n{}",
            cycle.join(", "),
            detail.join("\n")
        );
    }
}

/// Lines of code in a file, outside its `#[cfg(test)]` modules: not blank, not comments.
fn lines_of_code(text: &str, syntax: &syn::File) -> usize {
    let test_lines: BTreeSet<usize> = syntax
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if is_test_only(&m.attrs) => {
                let span = proc_macro2::Span::join(
                    &m.attrs[0].pound_token.span,
                    m.content.as_ref()?.0.span.close(),
                )?;
                Some(span.start().line..=span.end().line)
            }
            _ => None,
        })
        .flatten()
        .collect();
    text.lines()
        .enumerate()
        .filter(|(i, line)| {
            let line = line.trim();
            !test_lines.contains(&(i + 1)) && !line.is_empty() && !line.starts_with("//")
        })
        .count()
}

#[test]
fn no_file_is_too_long_to_read() {
    let too_long: Vec<String> = modules()
        .values()
        .filter_map(|module| {
            let text = fs::read_to_string(&module.file).unwrap();
            let lines = lines_of_code(&text, &module.syntax);
            (lines > MAX_LINES).then(|| format!("{}: {lines}", module.file.display()))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines of code (tests, comments and blank lines not counted):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let edges = |pairs: &[(u8, u8)]| pairs.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(cycle(&edges(&[(1, 2), (2, 3), (1, 3)])), None);
    let found = cycle(&edges(&[(1, 2), (2, 3), (3, 1), (3, 4)])).unwrap();
    assert_eq!(found.len(), 3);
}
