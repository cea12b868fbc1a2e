//! The committed JSON Schemas in schemas/json/ must equal the ones generated from the types.
//! Regenerate with `BULKHEAD_BLESS=1 cargo test -p bulkhead-schemas --test json_schemas`.

use std::path::Path;

#[test]
fn committed_json_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let bless = std::env::var_os("BULKHEAD_BLESS").is_some();
    let mut stale = Vec::new();
    let generated = bulkhead_schemas::schema::all();
    for (name, text) in &generated {
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.to_string());
        }
    }
    let known: Vec<_> = generated.iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !known.contains(&name.as_str()) {
            stale.push(format!("{name} (no longer generated)"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas in schemas/json: {stale:?}; regenerate with BULKHEAD_BLESS=1 cargo test -p bulkhead-schemas --test json_schemas"
    );
}

#[test]
fn spec_schema_describes_required_fields() {
    let (_, text) = bulkhead_schemas::schema::all()
        .into_iter()
        .find(|(n, _)| *n == "workload-spec.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let required: Vec<_> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(required, ["image", "memory_mb", "cpu_millicores"]);
}
