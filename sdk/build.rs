//! Compiles the Solidity project in `contracts/` and generates the Rust bindings from the
//! compiler's artifacts, so the bindings can never drift from the contracts.
//!
//! For every contract under `contracts/src` that has an ABI and deployable bytecode, the
//! compiled ABI and bytecode are written to `$OUT_DIR/abi/<Name>.json` and `$OUT_DIR/bindings.rs`
//! gets one module with one `alloy::sol!` invocation over that file. Each contract lives in its
//! own module because `sol!` turns structs of other contracts (e.g. `INodeRegistry.Prices`) into
//! sibling modules that would otherwise collide between contracts. A `RevertError` enum over
//! every contract's `*Errors` enum is generated as well, so revert decoding covers contracts
//! added later without hand edits.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    str::FromStr,
};

use foundry_compilers::{
    Project, ProjectPathsConfig,
    artifacts::{EvmVersion, remappings::Remapping},
    multi::{MultiCompiler, MultiCompilerSettings},
    solc::{Solc, SolcCompiler},
};

/// A contract that gets bindings.
struct Contract {
    name: String,
    source: PathBuf,
    json_path: PathBuf,
    has_errors: bool,
}

fn main() {
    if let Err(message) = generate() {
        // A panic shows the message in cargo's output with the build script's name.
        panic!("\n\nerror: {message}\n\n");
    }
}

fn generate() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let contracts = manifest_dir
        .join("..")
        .join("contracts")
        .canonicalize()
        .map_err(|e| format!("cannot find contracts/ next to sdk/: {e}"))?;

    let src = contracts.join("src");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        contracts.join("foundry.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        contracts.join("bin/solc").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        contracts.join("package-lock.json").display()
    );

    let node_modules = contracts.join("node_modules");
    if !node_modules.join("@openzeppelin").is_dir() || !node_modules.join("solc").is_dir() {
        return Err(format!(
            "{} is missing: run scripts/setup (npm ci in contracts/)",
            node_modules.display()
        ));
    }
    // A later `npm ci` changes the compiler or OpenZeppelin: rebuild then.
    println!(
        "cargo:rerun-if-changed={}",
        node_modules.join(".package-lock.json").display()
    );

    let artifacts = compile(&contracts, &out_dir)?;
    let contracts_found = write_abis(&contracts, &out_dir, artifacts)?;
    let bindings = render_bindings(&contracts_found);
    fs::write(out_dir.join("bindings.rs"), bindings)
        .map_err(|e| format!("cannot write bindings.rs: {e}"))?;
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (is this run by cargo?)"))
}

type Artifact = foundry_compilers::artifacts::ConfigurableContractArtifact;

/// Compiles every `.sol` file under `contracts/src` (and what it imports) with the project's
/// solc shim, the same optimizer and EVM version as `contracts/foundry.toml`, into `OUT_DIR`.
fn compile(contracts: &Path, out_dir: &Path) -> Result<Vec<(PathBuf, String, Artifact)>, String> {
    let shim = contracts.join("bin").join("solc");
    let solc = Solc::new(&shim)
        .map_err(|e| format!("cannot run the solc shim {}: {e}", shim.display()))?;
    let compiler = MultiCompiler::new(Some(SolcCompiler::Specific(solc)), None)
        .map_err(|e| format!("cannot set up the compiler: {e}"))?;

    let openzeppelin = format!(
        "@openzeppelin/={}/",
        contracts.join("node_modules/@openzeppelin").display()
    );
    let remapping = Remapping::from_str(&openzeppelin)
        .map_err(|e| format!("bad remapping {openzeppelin}: {e}"))?;
    let build_dir = out_dir.join("solidity");
    let paths = ProjectPathsConfig::builder()
        .sources(contracts.join("src"))
        .tests(contracts.join("test"))
        .scripts(contracts.join("script"))
        .lib(contracts.join("node_modules"))
        .remapping(remapping)
        .artifacts(build_dir.join("out"))
        .cache(build_dir.join("cache").join("solidity-files-cache.json"))
        .build_with_root(contracts);

    // Keep in step with contracts/foundry.toml: optimizer on, 200 runs, EVM cancun.
    let mut settings = MultiCompilerSettings::default();
    settings.solc.settings.optimizer.enabled = Some(true);
    settings.solc.settings.optimizer.runs = Some(200);
    settings.solc.settings.evm_version = Some(EvmVersion::Cancun);

    let project = Project::builder()
        .paths(paths)
        .settings(settings)
        .offline()
        .build(compiler)
        .map_err(|e| format!("cannot configure the Solidity project: {e}"))?;

    let mut files = Vec::new();
    collect_sol_files(&contracts.join("src"), &mut files)?;
    files.sort();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let output = project
        .compile_files(files)
        .map_err(|e| format!("solc failed: {e}"))?;
    if output.has_compiler_errors() {
        return Err(format!("the contracts do not compile:\n{output}"));
    }
    Ok(output.into_artifacts_with_files().collect())
}

fn collect_sol_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_sol_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "sol") {
            files.push(path);
        }
    }
    Ok(())
}

/// Writes `{abi, bytecode, deployedBytecode}` for each deployable contract of `contracts/src`.
fn write_abis(
    contracts: &Path,
    out_dir: &Path,
    artifacts: Vec<(PathBuf, String, Artifact)>,
) -> Result<Vec<Contract>, String> {
    let abi_dir = out_dir.join("abi");
    if abi_dir.exists() {
        fs::remove_dir_all(&abi_dir)
            .map_err(|e| format!("cannot clear {}: {e}", abi_dir.display()))?;
    }
    fs::create_dir_all(&abi_dir)
        .map_err(|e| format!("cannot create {}: {e}", abi_dir.display()))?;

    let mut found: BTreeMap<String, Contract> = BTreeMap::new();
    for (file, name, artifact) in artifacts {
        let relative = file.strip_prefix(contracts).unwrap_or(&file).to_path_buf();
        if !relative.starts_with("src") {
            continue; // OpenZeppelin and other libraries
        }
        let Some(abi) = artifact.abi.as_ref() else {
            continue;
        };
        let bytecode = artifact
            .bytecode
            .as_ref()
            .and_then(|b| b.object.as_bytes())
            .filter(|b| !b.is_empty());
        let deployed = artifact
            .deployed_bytecode
            .as_ref()
            .and_then(|d| d.bytecode.as_ref())
            .and_then(|b| b.object.as_bytes())
            .filter(|b| !b.is_empty());
        // Interfaces and abstract contracts have no bytecode; libraries with only internal
        // functions have no ABI. Neither is deployed on its own.
        let (Some(bytecode), Some(deployed)) = (bytecode, deployed) else {
            continue;
        };
        if abi.functions.is_empty() && abi.constructor.is_none() {
            continue;
        }
        if let Some(previous) = found.get(&name) {
            return Err(format!(
                "two contracts are named {name} ({} and {}): contract names must be unique",
                previous.source.display(),
                relative.display()
            ));
        }
        let json = serde_json::json!({
            "abi": abi,
            "bytecode": { "object": bytecode.to_string() },
            "deployedBytecode": { "object": deployed.to_string() },
        });
        let json_path = abi_dir.join(format!("{name}.json"));
        fs::write(
            &json_path,
            serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
        let has_errors = !abi.errors.is_empty();
        found.insert(
            name.clone(),
            Contract {
                name,
                source: relative,
                json_path,
                has_errors,
            },
        );
    }
    Ok(found.into_values().collect())
}

/// `NodeRegistry` -> `node_registry`, `MockUSDC` -> `mock_usdc`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn render_bindings(contracts: &[Contract]) -> String {
    let mut out = String::new();
    out.push_str(
        "// Generated by sdk/build.rs from the artifacts of contracts/src. Do not edit.\n\n",
    );
    for c in contracts {
        let module = snake_case(&c.name);
        let name = &c.name;
        let source = c.source.display();
        let json = c.json_path.display().to_string().replace('\\', "/");
        writeln!(
            out,
            "/// Bindings for `{name}` ({source}), generated from its compiled ABI and bytecode.\n\
             #[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all, clippy::pedantic)]\n\
             pub mod {module} {{\n    \
                 alloy::sol!(\n        \
                     #[sol(rpc)]\n        \
                     #[derive(Debug, PartialEq, Eq)]\n        \
                     {name},\n        \
                     \"{json}\"\n    \
                 );\n\
             }}\n\
             pub use {module}::{name};\n"
        )
        .expect("writing to a String cannot fail");
    }

    let names: Vec<String> = contracts.iter().map(|c| format!("{:?}", c.name)).collect();
    writeln!(
        out,
        "/// Names of every contract in `contracts/src` that has bindings, in alphabetical order.\n\
         pub const CONTRACT_NAMES: &[&str] = &[{}];\n",
        names.join(", ")
    )
    .expect("writing to a String cannot fail");

    // One variant per contract that declares custom errors.
    let with_errors: Vec<&Contract> = contracts.iter().filter(|c| c.has_errors).collect();
    out.push_str(
        "/// A custom error decoded from revert data, tagged with the contract whose ABI declares it.\n\
         #[derive(Debug, Clone, PartialEq, Eq)]\n\
         pub enum RevertError {\n",
    );
    for c in &with_errors {
        let module = snake_case(&c.name);
        writeln!(
            out,
            "    /// A custom error of `{name}`.\n    {name}({module}::{name}::{name}Errors),",
            name = c.name
        )
        .expect("writing to a String cannot fail");
    }
    out.push_str("}\n\nimpl RevertError {\n");
    out.push_str(
        "    /// Decodes `data` as a custom error of `preferred` first (the contract that was called),\n\
         \x20   /// then of every other contract (for errors bubbled up from nested calls).\n\
         \x20   pub fn decode(preferred: Option<&str>, data: &[u8]) -> Option<Self> {\n\
         \x20       #[allow(unused_imports)]\n\
         \x20       use alloy::sol_types::SolInterface as _;\n\
         \x20       type Decoder = fn(&[u8]) -> Option<RevertError>;\n\
         \x20       let decoders: &[(&str, Decoder)] = &[\n",
    );
    for c in &with_errors {
        let module = snake_case(&c.name);
        writeln!(
            out,
            "            ({name:?}, |d| {module}::{name}::{name}Errors::abi_decode(d).ok().map(Self::{name})),",
            name = c.name
        )
        .expect("writing to a String cannot fail");
    }
    out.push_str(
        "        ];\n\
         \x20       let first = decoders.iter().filter(|(name, _)| Some(*name) == preferred);\n\
         \x20       let others = decoders.iter().filter(|(name, _)| Some(*name) != preferred);\n\
         \x20       first.chain(others).find_map(|(_, decode)| decode(data))\n\
         \x20   }\n\n",
    );
    out.push_str(
        "    /// The contract whose ABI declares the error.\n\
         \x20   pub fn contract(&self) -> &'static str {\n\
         \x20       match *self {\n",
    );
    for c in &with_errors {
        writeln!(
            out,
            "            Self::{name}(_) => {name:?},",
            name = c.name
        )
        .expect("infallible");
    }
    if with_errors.is_empty() {
        out.push_str("            _ => unreachable!(),\n");
    }
    out.push_str("        }\n    }\n\n");
    out.push_str(
        "    /// The error's Solidity signature, e.g. `NotNodeOperator(bytes32,address)`.\n\
         \x20   pub fn signature(&self) -> &'static str {\n\
         \x20       #[allow(unused_imports)]\n\
         \x20       use alloy::sol_types::SolInterface as _;\n\
         \x20       match self {\n",
    );
    for c in &with_errors {
        writeln!(
            out,
            "            Self::{name}(e) => {module}::{name}::{name}Errors::signature_by_selector(e.selector())\n\
             \x20               .expect(\"a decoded error has a known selector\"),",
            name = c.name,
            module = snake_case(&c.name)
        )
        .expect("infallible");
    }
    if with_errors.is_empty() {
        out.push_str("            _ => unreachable!(),\n");
    }
    out.push_str("        }\n    }\n}\n");
    out
}
