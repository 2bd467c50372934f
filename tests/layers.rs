//! The code's shape, checked on every build: no module of `src/`, `actors/` or `load/` imports a
//! module that imports it back (directly or through others), every source file says its concern
//! in a `//!` line and stays under the size limit.
//!
//! An edge is a path naming another module of the same crate — `use crate::…`, `use super::…`,
//! `crate::…`/`super::…`/`self::…` paths in code (macro bodies included) and paths that start
//! with a child module's name; a parent's `mod` declaration is not an edge. Nodes are files
//! (inline modules such as `mod tests { … }` belong to their file).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Largest source file, in lines.
const MAX_LINES: usize = 650;

/// A crate's module tree and the edges between its files.
struct Graph {
    files: Vec<PathBuf>,
    /// Module path (from the crate root) → the file it lives in.
    modules: HashMap<Vec<String>, usize>,
    /// Module path → its child modules' names.
    children: HashMap<Vec<String>, BTreeSet<String>>,
    edges: BTreeSet<(usize, usize)>,
}

impl Graph {
    fn load(root: &Path) -> Graph {
        let mut g = Graph {
            files: Vec::new(),
            modules: HashMap::new(),
            children: HashMap::new(),
            edges: BTreeSet::new(),
        };
        let dir = root
            .parent()
            .expect("crate root in a directory")
            .to_path_buf();
        let mut parsed = Vec::new();
        g.add_file(root, Vec::new(), dir, &mut parsed);
        for (file, module, ast) in &parsed {
            let mut v = Edges {
                g: &g,
                file: *file,
                stack: vec![module.clone()],
                found: BTreeSet::new(),
            };
            v.visit_file(ast);
            let found = v.found;
            g.edges.extend(found);
        }
        g
    }

    /// Parses a module file and, recursively, the files of the modules it declares.
    fn add_file(
        &mut self,
        path: &Path,
        module: Vec<String>,
        child_dir: PathBuf,
        parsed: &mut Vec<(usize, Vec<String>, syn::File)>,
    ) {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        self.modules.insert(module.clone(), file);
        self.add_items(&ast.items, &module, file, path, &child_dir, parsed);
        parsed.push((file, module, ast));
    }

    fn add_items(
        &mut self,
        items: &[syn::Item],
        module: &[String],
        file: usize,
        path: &Path,
        child_dir: &Path,
        parsed: &mut Vec<(usize, Vec<String>, syn::File)>,
    ) {
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            let mut child = module.to_vec();
            child.push(name.clone());
            self.children
                .entry(module.to_vec())
                .or_default()
                .insert(name.clone());
            match &m.content {
                Some((_, inner)) => {
                    self.modules.insert(child.clone(), file);
                    let dir = child_dir.join(&name);
                    self.add_items(inner, &child, file, path, &dir, parsed);
                }
                None => {
                    let explicit = m.attrs.iter().find_map(|a| {
                        let syn::Meta::NameValue(nv) = &a.meta else {
                            return None;
                        };
                        if !nv.path.is_ident("path") {
                            return None;
                        }
                        let syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) = &nv.value
                        else {
                            return None;
                        };
                        Some(s.value())
                    });
                    let (target, dir) = match explicit {
                        Some(p) => {
                            let target = path.parent().expect("a directory").join(p);
                            let dir = target.with_extension("");
                            (target, dir)
                        }
                        None => {
                            let flat = child_dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                (flat, child_dir.join(&name))
                            } else {
                                let nested = child_dir.join(&name).join("mod.rs");
                                (nested, child_dir.join(&name))
                            }
                        }
                    };
                    self.add_file(&target, child, dir, parsed);
                }
            }
        }
    }

    /// The file of the longest known module prefix of an absolute path.
    fn file_of(&self, segments: &[String]) -> Option<usize> {
        (1..=segments.len())
            .rev()
            .find_map(|n| self.modules.get(&segments[..n]).copied())
    }

    /// Files in import circles: each strongly connected component of more than one file.
    fn circles(&self) -> Vec<Vec<usize>> {
        let n = self.files.len();
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            out[a].push(b);
        }
        // Tarjan's algorithm, iteratively.
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut found = Vec::new();
        for start in 0..n {
            if index[start] != usize::MAX {
                continue;
            }
            let mut work = vec![(start, 0usize)];
            while let Some(&mut (v, ref mut i)) = work.last_mut() {
                if *i == 0 {
                    index[v] = next;
                    low[v] = next;
                    next += 1;
                    stack.push(v);
                    on_stack[v] = true;
                }
                if let Some(&w) = out[v].get(*i) {
                    *i += 1;
                    if index[w] == usize::MAX {
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        scc.sort_unstable();
                        found.push(scc);
                    }
                }
            }
        }
        found
    }

    fn describe(&self, circle: &[usize]) -> String {
        let name = |i: usize| {
            let f = &self.files[i];
            f.strip_prefix(workspace())
                .unwrap_or(f)
                .display()
                .to_string()
        };
        let mut lines = vec![format!(
            "import circle: {}",
            circle
                .iter()
                .map(|&i| name(i))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        for &(a, b) in &self.edges {
            if circle.contains(&a) && circle.contains(&b) {
                lines.push(format!("  {} -> {}", name(a), name(b)));
            }
        }
        lines.join("\n")
    }
}

/// Collects a file's edges.
struct Edges<'g> {
    g: &'g Graph,
    file: usize,
    /// The module path of the (inline) module being visited.
    stack: Vec<Vec<String>>,
    found: BTreeSet<(usize, usize)>,
}

impl Edges<'_> {
    fn current(&self) -> &[String] {
        self.stack.last().expect("a module")
    }

    /// Records the edge a path (its leading segments) makes, if it names a module.
    fn path(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let here = self.current();
        let is_child = self.g.children.get(here).is_some_and(|c| c.contains(first));
        let (mut abs, mut rest) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (here.to_vec(), &segments[1..]),
            "super" => (
                here[..here.len().saturating_sub(1)].to_vec(),
                &segments[1..],
            ),
            _ if is_child => (here.to_vec(), segments),
            _ => return,
        };
        while rest.first().is_some_and(|s| s == "super") {
            abs.pop();
            rest = &rest[1..];
        }
        abs.extend(rest.iter().cloned());
        if let Some(target) = self.g.file_of(&abs) {
            if target != self.file {
                self.found.insert((self.file, target));
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                let p = prefix.clone();
                self.path(&p);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                let p = prefix.clone();
                self.path(&p);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                let p = prefix.clone();
                self.path(&p);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Paths inside a macro's tokens: `crate :: a :: b`, `super :: x`, `child :: f`.
    fn tokens(&mut self, tokens: &TokenStream) {
        let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.tokens(&g.stream());
                i += 1;
                continue;
            }
            let mut segments = Vec::new();
            let mut j = i;
            while let Some(TokenTree::Ident(id)) = trees.get(j) {
                segments.push(id.to_string());
                let colons = matches!(
                    (trees.get(j + 1), trees.get(j + 2)),
                    (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                        if a.as_char() == ':' && b.as_char() == ':'
                );
                if !colons {
                    break;
                }
                j += 3;
            }
            if segments.len() > 1 {
                self.path(&segments);
            }
            i = j.max(i) + 1;
        }
    }
}

impl<'ast> Visit<'ast> for Edges<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let mut inner = self.current().to_vec();
        inner.push(m.ident.to_string());
        self.stack.push(inner);
        syn::visit::visit_item_mod(self, m);
        self.stack.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.path(&segments);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(&m.tokens);
        syn::visit::visit_macro(self, m);
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const CRATES: [&str; 3] = ["src/lib.rs", "actors/src/lib.rs", "load/src/lib.rs"];

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut report = Vec::new();
    for root in CRATES {
        let g = Graph::load(&workspace().join(root));
        assert!(g.files.len() > 3, "{root}: the module tree was read");
        assert!(!g.edges.is_empty(), "{root}: edges were found");
        report.extend(g.circles().iter().map(|c| g.describe(c)));
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Writes a small crate whose files are `(path, text)` and returns its root.
fn fixture(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    dir.join("lib.rs")
}

#[test]
fn the_check_finds_a_circle_through_three_files_and_ignores_one_way_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fixture(
        dir.path(),
        &[
            ("lib.rs", "//! root\npub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "//! a\nuse crate::b::Thing;\n"),
            ("b/mod.rs", "//! b\nmod inner;\npub struct Thing;\n"),
            // A child naming its parent's sibling through `super::super`, inside a macro.
            (
                "b/inner.rs",
                "//! inner\nfn f() { let _ = format!(\"{}\", super::super::c::X); }\n",
            ),
            (
                "c.rs",
                "//! c\npub const X: u8 = 1;\nfn g() -> u8 { crate::a::Y }\n",
            ),
        ],
    );
    let g = Graph::load(&root);
    assert_eq!(g.files.len(), 5);
    // a -> b, inner -> c, c -> a: b/mod.rs declares inner (no edge), so no circle yet.
    assert!(g.circles().is_empty(), "{:?}", g.edges);
    // Now b's own code uses its child, and the child reaches c, and c reaches a: a circle.
    std::fs::write(
        dir.path().join("b/mod.rs"),
        "//! b\nmod inner;\npub struct Thing;\nfn h() { inner::f() }\n",
    )
    .expect("write");
    let g = Graph::load(&root);
    let circles = g.circles();
    assert_eq!(circles.len(), 1, "{:?}", g.edges);
    assert_eq!(circles[0].len(), 4, "{}", g.describe(&circles[0]));
    // Tests inside a file (`mod tests { use super::*; }`) are the file itself: no edge.
    std::fs::write(
        dir.path().join("a.rs"),
        "//! a\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    )
    .expect("write");
    assert!(Graph::load(&root).circles().is_empty());
}

#[test]
fn every_source_file_says_its_concern_and_stays_small() {
    let mut problems = BTreeMap::new();
    for root in CRATES {
        let g = Graph::load(&workspace().join(root));
        for f in &g.files {
            let text = std::fs::read_to_string(f).expect("read");
            let lines = text.lines().count();
            if !text.trim_start().starts_with("//!") {
                problems.insert(f.display().to_string(), "no //! line".to_owned());
            } else if lines > MAX_LINES {
                problems.insert(f.display().to_string(), format!("{lines} lines"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
