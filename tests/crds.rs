//! The CustomResourceDefinitions: the committed copies match the types, and the definitions
//! follow the project's conventions.
//!
//! `COFFER_UPDATE_CRDS=1 cargo test --test crds` (`make crds`) rewrites the committed copies.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use coffer::resources::{
    MAX_PARAMETER_NAME_LENGTH, Parameter, ParameterSpec, crd_yaml, crds, crds_yaml,
    validate_parameter_name,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{CompiledSchema, compile_schema, estimate_rule_cost};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Folders that hold a copy of every CRD, relative to the repository root.
const CRD_FOLDERS: [&str; 2] = ["crds", "charts/coffer/crds"];

/// Short names of the kinds that come with Kubernetes, and of their plurals and singulars
/// that people type most.
const CORE_SHORT_NAMES: &[&str] = &[
    "cj",
    "cm",
    "crd",
    "crds",
    "cs",
    "csr",
    "deploy",
    "ds",
    "ep",
    "ev",
    "hpa",
    "ing",
    "ip",
    "limits",
    "netpol",
    "no",
    "ns",
    "pc",
    "pdb",
    "po",
    "psp",
    "pv",
    "pvc",
    "quota",
    "rc",
    "rs",
    "sa",
    "sc",
    "sts",
    "svc",
    "secret",
    "secrets",
    "configmap",
    "pod",
    "pods",
    "node",
    "job",
    "jobs",
    "event",
    "events",
    "lease",
    "role",
    "service",
    "deployment",
];

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crd_name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap_or_default()
}

fn schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|version| version.schema.as_ref())
        .and_then(|validation| validation.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("the schema serializes")
}

#[test]
fn crd_files_match_generated() {
    let update = std::env::var("COFFER_UPDATE_CRDS").is_ok_and(|v| v == "1");
    let root = repository_root();
    let mut stale = Vec::new();
    for crd in crds() {
        let expected = crd_yaml(&crd).expect("the CRD prints as YAML");
        for folder in CRD_FOLDERS {
            let path = root.join(folder).join(format!("{}.yaml", crd_name(&crd)));
            if update {
                std::fs::create_dir_all(root.join(folder)).expect("create the CRD folder");
                std::fs::write(&path, &expected).expect("write the CRD file");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(actual) if actual == expected => {}
                Ok(_) => stale.push(format!("{} differs", relative(&root, &path))),
                Err(err) => stale.push(format!("{} unreadable: {err}", relative(&root, &path))),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the committed CRDs do not match the Rust types:\n  {}\n\
         Run `make crds` (COFFER_UPDATE_CRDS=1 cargo test --test crds) and commit the result.",
        stale.join("\n  ")
    );
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_stray_files_in_crd_folders() {
    let expected: BTreeSet<String> = crds()
        .iter()
        .map(|crd| format!("{}.yaml", crd_name(crd)))
        .collect();
    for folder in CRD_FOLDERS {
        let Ok(entries) = std::fs::read_dir(repository_root().join(folder)) else {
            continue; // crd_files_match_generated reports a missing folder
        };
        let found: BTreeSet<String> = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        let stray: Vec<_> = found.difference(&expected).collect();
        assert!(stray.is_empty(), "unexpected files in {folder}/: {stray:?}");
    }
}

#[test]
fn crds_yaml_is_the_documents_in_order_and_deterministic() {
    let all = crds_yaml().expect("prints");
    assert_eq!(all, crds_yaml().expect("prints"));
    let documents: Vec<String> = crds()
        .iter()
        .map(|crd| crd_yaml(crd).expect("prints"))
        .collect();
    assert_eq!(all, documents.concat());
    for document in &documents {
        assert!(document.starts_with("---\n"), "{document:.40}");
        assert_eq!(document.matches("\n---\n").count(), 0);
        let parsed: CustomResourceDefinition =
            serde_yaml::from_str(document.trim_start_matches("---\n")).expect("parses back");
        assert!(crds().contains(&parsed));
    }
}

#[test]
fn three_crds_in_group_coffer_dev() {
    let crds = crds();
    let names: Vec<String> = crds.iter().map(crd_name).collect();
    assert_eq!(
        names,
        [
            "kmskeys.coffer.dev",
            "secrets.coffer.dev",
            "parameters.coffer.dev"
        ]
    );
    let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(kinds, ["KmsKey", "Secret", "Parameter"]);
    for crd in &crds {
        assert_eq!(crd.spec.group, "coffer.dev");
        let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(versions, ["v1alpha1"]);
        assert!(crd.spec.versions.iter().all(|v| v.served && v.storage));
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["coffer".to_owned()][..])
        );
    }
}

#[test]
fn namespaced_with_status_subresource() {
    for crd in crds() {
        assert_eq!(crd.spec.scope, "Namespaced", "{}", crd_name(&crd));
        let version = crd.spec.versions.first().expect("a version");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has no status subresource",
            crd_name(&crd)
        );
        let schema = schema(&crd);
        assert_eq!(schema["properties"]["status"]["type"], "object");
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("spec")))
        );
    }
}

#[test]
fn printer_columns() {
    let expected: [(&str, &[&str]); 3] = [
        (
            "kmskeys.coffer.dev",
            &["KeyId", "State", "Spec", "Usage", "Age"],
        ),
        (
            "secrets.coffer.dev",
            &["Current", "Rotation", "Next", "Age"],
        ),
        ("parameters.coffer.dev", &["Name", "Type", "Version", "Age"]),
    ];
    for (crd, (name, columns)) in crds().iter().zip(expected) {
        assert_eq!(crd_name(crd), name);
        let version = crd.spec.versions.first().expect("a version");
        let found: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(found, columns, "{name}");
        let schema = schema(crd);
        for column in version.additional_printer_columns.iter().flatten() {
            if column.json_path.starts_with(".metadata.") {
                continue;
            }
            // Each column points at a field of the schema.
            let mut node = &schema;
            for part in column.json_path.trim_start_matches('.').split('.') {
                node = &node["properties"][part];
            }
            assert!(
                node.is_object(),
                "{name}: column {} points nowhere",
                column.name
            );
        }
    }
}

/// Paths of the properties under `node` that have no description.
fn undescribed(node: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let property_path = format!("{path}.{name}");
            let described = property
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                missing.push(property_path.clone());
            }
            undescribed(property, &property_path, missing);
        }
    }
    if let Some(items) = node.get("items") {
        undescribed(items, &format!("{path}[]"), missing);
    }
    if let Some(values) = node.get("additionalProperties") {
        undescribed(values, &format!("{path}{{}}"), missing);
    }
}

#[test]
fn every_property_has_a_description() {
    let mut missing = Vec::new();
    for crd in crds() {
        let schema = schema(&crd);
        let name = crd_name(&crd);
        if schema["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            missing.push(name.clone());
        }
        undescribed(&schema, &name, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "properties without a description:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn short_names_do_not_collide_with_core_kinds() {
    let mut seen = BTreeSet::new();
    for crd in crds() {
        let names = &crd.spec.names;
        let short_names = names.short_names.clone().unwrap_or_default();
        assert!(
            !short_names.is_empty(),
            "{} has no short name",
            crd_name(&crd)
        );
        for short in short_names {
            assert!(
                !CORE_SHORT_NAMES.contains(&short.as_str()),
                "{}: short name {short} is taken by Kubernetes",
                crd_name(&crd)
            );
            assert!(seen.insert(short.clone()), "short name {short} used twice");
        }
    }
    let short: Vec<String> = crds()
        .iter()
        .flat_map(|crd| crd.spec.names.short_names.clone().unwrap_or_default())
        .collect();
    assert_eq!(short, ["kk", "csec", "cparam"]);
}

/// Every `x-kubernetes-validations` rule under `node`, with the path of its schema node.
fn rules(node: &Value, path: &str, found: &mut Vec<(String, String)>) {
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        found.push((
            path.to_owned(),
            rule["rule"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            rules(property, &format!("{path}.{name}"), found);
        }
    }
    if let Some(items) = node.get("items") {
        rules(items, &format!("{path}[]"), found);
    }
}

#[test]
fn cel_rules_are_in_the_schemas() {
    let expected: [(&str, &str, &str); 12] = [
        ("kmskeys", ".spec", "self.keySpec.startsWith('ECC_')"),
        ("kmskeys", ".spec", "self.keySpec != 'SYMMETRIC_DEFAULT'"),
        ("kmskeys", ".spec", "!has(self.rotation)"),
        ("kmskeys", ".spec.keySpec", "self == oldSelf"),
        ("kmskeys", ".spec.keyUsage", "self == oldSelf"),
        ("kmskeys", ".spec.origin", "self == oldSelf"),
        ("secrets", ".spec", "has(self.generate)"),
        (
            "secrets",
            ".spec.rotation",
            "(self.strategy == 'postgres') == has(self.postgres)",
        ),
        (
            "secrets",
            ".spec.rotation",
            "(self.strategy == 'job') == has(self.job)",
        ),
        (
            "parameters",
            ".spec",
            "self.type == 'SecureString' || has(self.value)",
        ),
        (
            "parameters",
            ".spec",
            "!(has(self.sealedValue) && has(self.fromSecret))",
        ),
        ("parameters", ".spec.name", "self == oldSelf"),
    ];
    for (plural, path, fragment) in expected {
        let crd = crds()
            .into_iter()
            .find(|crd| crd.spec.names.plural == plural)
            .expect("the CRD exists");
        let mut found = Vec::new();
        rules(&schema(&crd), "", &mut found);
        assert!(
            found
                .iter()
                .any(|(p, rule)| p == path && rule.contains(fragment)),
            "{plural}: no rule with {fragment:?} at {path}; found {found:#?}"
        );
    }
}

/// Collect compilation errors and cost warnings of the rules under `node`.
fn check_compiled(node: &CompiledSchema, path: &str, problems: &mut Vec<String>) {
    for result in &node.validations {
        match result {
            Err(err) => problems.push(format!("{path}: {err}")),
            Ok(compiled) => {
                for warning in estimate_rule_cost(&compiled.rule.rule, node) {
                    problems.push(format!("{path}: {}: {}", warning.rule, warning.message));
                }
            }
        }
    }
    for (name, property) in &node.properties {
        check_compiled(property, &format!("{path}.{name}"), problems);
    }
    if let Some(items) = &node.items {
        check_compiled(items, &format!("{path}[]"), problems);
    }
    if let Some(values) = &node.additional_properties {
        check_compiled(values, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn cel_rules_compile_within_the_cost_budget() {
    let mut problems = Vec::new();
    for crd in crds() {
        let compiled = compile_schema(&schema(&crd));
        check_compiled(&compiled, &crd_name(&crd), &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Whether the Parameter CRD accepts `name` as spec.name: its length bounds, its pattern, and
/// its CEL rules.
fn schema_accepts_parameter_name(
    compiled: &CompiledSchema,
    name_schema: &Value,
    pattern: &regex::Regex,
    name: &str,
) -> bool {
    let length = name.chars().count();
    let min = name_schema["minLength"].as_u64().unwrap_or(0);
    let max = name_schema["maxLength"].as_u64().unwrap_or(u64::MAX);
    if (length as u64) < min || (length as u64) > max || !pattern.is_match(name) {
        return false;
    }
    let object = json!({
        "apiVersion": "coffer.dev/v1alpha1",
        "kind": "Parameter",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": serde_json::to_value(ParameterSpec {
            name: name.to_owned(),
            value: Some("v".to_owned()),
            ..ParameterSpec::default()
        })
        .expect("serializes"),
    });
    kube::core::cel::Validator::new()
        .validate_compiled(compiled, &object, None)
        .is_ok()
}

fn parameter_name_checks() -> (CompiledSchema, Value, regex::Regex) {
    use kube::CustomResourceExt;
    let schema = schema(&Parameter::crd());
    let name_schema = schema["properties"]["spec"]["properties"]["name"].clone();
    let pattern = regex::Regex::new(name_schema["pattern"].as_str().expect("a pattern"))
        .expect("the pattern compiles");
    (compile_schema(&schema), name_schema, pattern)
}

#[test]
fn parameter_name_schema_agrees_with_validate_parameter_name_on_edge_cases() {
    let (compiled, name_schema, pattern) = parameter_name_checks();
    let level = |n: usize| -> String { (0..n).map(|i| format!("/l{i}")).collect() };
    let cases = [
        String::new(),
        "a".to_owned(),
        "x".repeat(MAX_PARAMETER_NAME_LENGTH),
        "x".repeat(MAX_PARAMETER_NAME_LENGTH + 1),
        format!("/{}", "x".repeat(MAX_PARAMETER_NAME_LENGTH - 1)),
        format!("/{}", "x".repeat(MAX_PARAMETER_NAME_LENGTH)),
        level(15),
        level(16),
        "app/db".to_owned(),
        "/app/".to_owned(),
        "//app".to_owned(),
        "/".to_owned(),
        "/a b".to_owned(),
        "/a:b".to_owned(),
        "/aws/x".to_owned(),
        "AWSx".to_owned(),
        "/sSm".to_owned(),
        "/app/aws".to_owned(),
        "/aw".to_owned(),
    ];
    for name in cases {
        assert_eq!(
            schema_accepts_parameter_name(&compiled, &name_schema, &pattern, &name),
            validate_parameter_name(&name).is_ok(),
            "{name:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parameter_name_schema_agrees_with_validate_parameter_name(
        name in "(/|a|s|w|m|S|W|A|M|x|_|-|\\.|7| |:){0,24}"
    ) {
        let (compiled, name_schema, pattern) = parameter_name_checks();
        prop_assert_eq!(
            schema_accepts_parameter_name(&compiled, &name_schema, &pattern, &name),
            validate_parameter_name(&name).is_ok(),
            "{:?}", name
        );
    }
}

/// Every `pattern` under `node`, with the path of its schema node.
fn patterns(node: &Value, path: &str, found: &mut Vec<(String, String)>) {
    if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        found.push((path.to_owned(), pattern.to_owned()));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            patterns(property, &format!("{path}.{name}"), found);
        }
    }
    if let Some(items) = node.get("items") {
        patterns(items, &format!("{path}[]"), found);
    }
}

#[test]
fn schema_patterns_compile() {
    let mut found = Vec::new();
    for crd in crds() {
        patterns(&schema(&crd), &crd_name(&crd), &mut found);
    }
    assert!(found.len() > 10, "{found:?}");
    for (path, pattern) in found {
        assert!(
            regex::Regex::new(&pattern).is_ok(),
            "{path}: {pattern} does not compile"
        );
    }
}

#[test]
fn rotation_schedule_pattern() {
    let pattern = regex::Regex::new(coffer::resources::SCHEDULE_PATTERN).expect("compiles");
    for good in [
        "rate(1 day)",
        "rate(30 days)",
        "rate(4 hours)",
        "rate(1000 days)",
        "cron(0 4 1 * ? *)",
        "cron(0/30 8-17 ? * MON-FRI *)",
    ] {
        assert!(pattern.is_match(good), "{good}");
    }
    for bad in [
        "",
        "rate(0 days)",
        "rate(30 weeks)",
        "rate(30days)",
        "rate(-1 days)",
        "cron(0 4 * * ?)",
        "cron(0 4 1 * ? * *)",
        "cron()",
        "every day",
        "rate(1 day) ",
    ] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
}

#[test]
fn kms_key_name_patterns() {
    use kube::CustomResourceExt;
    let schema = schema(&coffer::resources::KmsKey::crd());
    let spec = &schema["properties"]["spec"]["properties"];
    let compile = |node: &Value| {
        regex::Regex::new(node["pattern"].as_str().expect("a pattern")).expect("compiles")
    };
    let alias = compile(&spec["aliases"]["items"]);
    for good in ["app", "app/db", "A_b-1/c"] {
        assert!(alias.is_match(good), "{good}");
    }
    for bad in ["", "app db", "app:db", "é"] {
        assert!(!alias.is_match(bad), "{bad}");
    }
    let statement = &spec["policy"]["properties"]["statements"]["items"]["properties"];
    let principal = compile(&statement["principals"]["items"]);
    for good in [
        "*",
        "system:serviceaccount:app:api",
        "system:serviceaccount:kube-system:coffer.controller",
        "system:serviceaccounts:app",
    ] {
        assert!(principal.is_match(good), "{good}");
    }
    for bad in [
        "",
        "app:api",
        "system:serviceaccount:app",
        "system:serviceaccount:App:api",
        "system:serviceaccounts:app:api",
        "**",
    ] {
        assert!(!principal.is_match(bad), "{bad}");
    }
    let action = compile(&statement["actions"]["items"]);
    for good in ["*", "kms:*", "kms:Decrypt", "kms:Describe*"] {
        assert!(action.is_match(good), "{good}");
    }
    for bad in [
        "",
        "Decrypt",
        "secretsmanager:GetSecretValue",
        "kms:",
        "kms:De crypt",
    ] {
        assert!(!action.is_match(bad), "{bad}");
    }
}

/// The acceptance check as a user runs it: `coffer crd` prints exactly the committed documents.
#[test]
fn coffer_crd_prints_the_committed_files() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let root = repository_root();
    let committed: String = [
        "kmskeys.coffer.dev.yaml",
        "secrets.coffer.dev.yaml",
        "parameters.coffer.dev.yaml",
    ]
    .iter()
    .map(|file| std::fs::read_to_string(root.join("crds").join(file)).unwrap())
    .collect();
    assert_eq!(
        printed, committed,
        "run `make crds` after changing the types"
    );
    assert_eq!(printed.matches("kind: CustomResourceDefinition").count(), 3);
}
