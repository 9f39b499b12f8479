//! The layering of top-level modules (ARCHITECTURE.md): a module may name
//! only modules of a lower layer. Read off the `crate::…` paths of every
//! source file, so a new import that climbs a layer (or makes a cycle)
//! fails here rather than in review.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first. Modules in one layer may not name each other, with the
/// exceptions listed in [`ALLOWED_SAME_LAYER`].
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["domain", "clock", "telemetry", "net", "metrics"],
    &["db"],
    &["audit"],
    &["config"],
    &["auth", "notify", "ops"],
    &["store"],
    &["fhir"],
    &["state"],
    &["api"],
    &["scheduler"],
    &["startup"],
    &["demo"],
    &["cli"],
];

/// None today; an entry here needs a line in ARCHITECTURE.md saying why.
const ALLOWED_SAME_LAYER: &[(&str, &str)] = &[];

/// Macros exported at the crate root (`crate::name!`), and the module each
/// belongs to: naming one names that module.
const ROOT_MACROS: &[(&str, &str)] = &[("per_backend", "db"), ("statement_key", "db")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None`: the crate root,
/// `main.rs` and the binaries, which may use anything).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!["lib", "main", "bin"].contains(&name.as_str())).then_some(name)
}

/// Every `crate::name` a file's code (not its comments) mentions.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
            rest = after;
        }
    }
    names
}

#[test]
fn modules_name_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{module} ({}) is in no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            // Macros exported at the crate root stand for their module.
            let named = ROOT_MACROS
                .iter()
                .find(|(name, _)| *name == named)
                .map_or(named, |(_, owner)| (*owner).to_owned());
            if named == module {
                continue;
            }
            let Some(theirs) = layer_of(&named) else {
                violations.push(format!(
                    "{}: names crate::{named}, in no layer",
                    file.display()
                ));
                continue;
            };
            let allowed = theirs < own
                || (theirs == own
                    && ALLOWED_SAME_LAYER.contains(&(module.as_str(), named.as_str())));
            if !allowed {
                violations.push(format!(
                    "{}: {module} (layer {own}) names crate::{named} (layer {theirs})",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|r| r.strip_suffix(';'))
        {
            assert!(
                layer_of(name).is_some(),
                "src/{name} is in no layer of LAYERS"
            );
        }
    }
}

/// Handlers hold no SQL (ARCHITECTURE.md, "Where each thing lives"): no file
/// of `src/api` names a table of `db::schema`, a diesel item other than
/// `QueryResult` (without diesel's traits in scope no query can be built or
/// run), raw SQL, or the per-backend dispatch. Queries are named operations
/// of `store` (or `audit`, `notify`, `auth`, `db::models` for their own rows).
#[test]
fn handlers_build_no_queries() {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut files = Vec::new();
    sources(&api, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let diesel_item = code
                .match_indices("diesel::")
                .any(|(at, _)| !code[at..].starts_with("diesel::QueryResult"));
            let other = ["schema::", "sql_query", "batch_execute", "per_backend!"]
                .iter()
                .any(|needle| code.contains(needle));
            if diesel_item || other {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
