use std::collections::BTreeSet;

fn names(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
        .expect("migrations folder")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = names("sqlite");
    let postgres = names("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must have the same names"
    );
    for name in &sqlite {
        for backend in ["sqlite", "postgres"] {
            for file in ["up.sql", "down.sql"] {
                let path = format!(
                    "{}/migrations/{backend}/{name}/{file}",
                    env!("CARGO_MANIFEST_DIR")
                );
                assert!(std::path::Path::new(&path).exists(), "missing {path}");
            }
        }
    }
}
