//! `decloud storage put|get|ls|rm`: files encrypted on this machine with a key derived from the
//! wallet, stored as distinct replicas on storage nodes under a StorageMarket deal.

use std::{
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use alloy::primitives::{B256, U256};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use url::Url;

use decloud_sdk::storage::{
    DealState, FileRecord, NodeSource, Phase, Progress, ProgressFn, PutOptions, RepairSetup,
    StorageClient, StorageCoordinator, StorageError, StorageNode,
};

use crate::{
    context::{Chain, CliError, GlobalArgs, Report, Settings, confirm, money, usdc_arg},
    tenant::current_session,
};

/// Storage commands.
#[derive(Debug, Subcommand)]
pub(crate) enum StorageCommand {
    /// Store a file: encrypt it here, place the replicas (the orchestrator's placement, or
    /// --node), open a deal, upload one distinct replica per node, and hand the deal's repair to
    /// the orchestrator. Run it again after an interruption or a failure to finish.
    Put(PutArgs),
    /// Fetch a stored file (by name or deal id), from any replica that serves it intact. A
    /// replica the orchestrator's repairer moved is followed on-chain: the orchestrator tells
    /// where its new node serves, and the local record is updated.
    Get(GetArgs),
    /// Your stored files with their deals: size, replicas, proven epochs, funds left, and each
    /// replica's node on-chain now.
    Ls(LsArgs),
    /// Remove a stored file: the nodes delete it, the deal ends after the current epoch, and
    /// its unproven replica-epochs are refunded when it settles (`rm` again once it has ended).
    Rm(RmArgs),
}

/// Arguments of `storage put`.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The file.
    file: PathBuf,
    /// Name in your index (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Replicas, each on its own node.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    replicas: u64,
    /// Epochs to pay for.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// USDC per replica per proven epoch, e.g. 0.01.
    #[arg(long, value_parser = usdc_arg, default_value = "0.01")]
    price: u64,
    /// A storage node to place a replica on, as NODE_ID=CHUNK_API_URL; repeat it (the first
    /// active ones that answer are used, in order). Without it the orchestrator's placement
    /// picks the nodes [env: DECLOUD_STORAGE_NODES, comma-separated].
    #[arg(long = "node", env = "DECLOUD_STORAGE_NODES", value_delimiter = ',', value_parser = node_arg)]
    nodes: Vec<StorageNode>,
    /// Prefer nodes in this region (the orchestrator's placement; nodes elsewhere fill the rest).
    #[arg(long, conflicts_with = "nodes")]
    region: Option<String>,
    /// Do not hand the deal's repair to the orchestrator. By default the deal names the
    /// orchestrator's repairer on-chain and the orchestrator gets the deal's repair secret (it
    /// can rebuild a lost replica, never read the file); that step needs `decloud login`.
    #[arg(long)]
    no_repair: bool,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Arguments of `storage get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// Name or deal id.
    file: String,
    /// Where to write it (default: the name, in the current directory).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Arguments of `storage ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    global: GlobalArgs,
}

/// Arguments of `storage rm`.
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// Name or deal id.
    file: String,
    #[command(flatten)]
    global: GlobalArgs,
}

fn node_arg(text: &str) -> Result<StorageNode, String> {
    let (id, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NODE_ID=URL"))?;
    let node: B256 = id
        .trim()
        .parse()
        .map_err(|e| format!("{id:?} is not a node id (0x and 64 hex digits): {e}"))?;
    let url = Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    Ok(StorageNode { node, url })
}

/// Runs a storage command.
pub(crate) async fn run(command: StorageCommand) -> Result<(), CliError> {
    match command {
        StorageCommand::Put(args) => put(args).await,
        StorageCommand::Get(args) => get(args).await,
        StorageCommand::Ls(args) => ls(args).await,
        StorageCommand::Rm(args) => rm(args).await,
    }
}

/// The storage client of the wallet, asking the orchestrator where a moved replica's node
/// serves (get, ls and rm follow each deal's replicas on-chain).
async fn client(global: &GlobalArgs) -> Result<StorageClient, CliError> {
    let settings = Settings::from_process(global)?;
    let chain = Chain::with_key(&settings).await?;
    let index = settings.config_dir.join("storage");
    Ok(StorageClient::new(
        chain.provider.clone(),
        chain.signer().clone(),
        &chain.deployment,
        index,
    )
    .await?
    .with_coordinator(StorageCoordinator::new(settings.orchestrator.clone())))
}

/// Progress lines on stderr: one per phase, then every 10 %.
fn progress_lines() -> ProgressFn {
    let last: Mutex<Option<(Phase, u64)>> = Mutex::new(None);
    Arc::new(move |p: Progress| {
        let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
        let step = percent / 10;
        let mut last = last.lock().expect("progress lock");
        if last.is_some_and(|(phase, s)| phase == p.phase && s == step) {
            return;
        }
        *last = Some((p.phase, step));
        let what = match p.phase {
            Phase::Commit => "encrypting and hashing",
            Phase::Tree => "building commitments",
            Phase::Upload => "uploading replicas",
            Phase::Download => "downloading",
        };
        let mut err = std::io::stderr().lock();
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        let _ = writeln!(
            err,
            "{what}: {percent:>3}% ({:.1} of {:.1} MiB)",
            mib(p.done),
            mib(p.total)
        );
    })
}

/// The repair state for JSON: `{"state": "registered", "repairer": "0x…"}`.
fn repair_json(repair: &RepairSetup) -> Value {
    serde_json::to_value(repair).expect("the repair state serializes")
}

/// The repair state for people.
fn repair_words(repair: &RepairSetup) -> String {
    match repair {
        RepairSetup::Registered { repairer } => format!("repaired by {repairer}"),
        RepairSetup::RepairerSet { .. } | RepairSetup::Pending => {
            "repair not set up: run put again".into()
        }
        RepairSetup::Declined => "no repair".into(),
        RepairSetup::NotOffered => "no repairer offered".into(),
    }
}

fn hex_root(root: U256) -> String {
    format!("{root:#066x}")
}

async fn put(args: PutArgs) -> Result<(), CliError> {
    let client = client(&args.global).await?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let resuming = client.live(&name)?;
    let settings = Settings::from_process(&args.global)?;
    let mut coordinator = StorageCoordinator::new(settings.orchestrator.clone());
    if let Ok(session) = current_session(&settings) {
        coordinator = coordinator.with_session(session.token);
    }
    if resuming.as_ref().is_none_or(|r| r.deal.is_none()) {
        let replicas = resuming
            .as_ref()
            .map_or(args.replicas, |r| r.replicas.len() as u64);
        let deposit = U256::from(args.price) * U256::from(args.epochs) * U256::from(replicas);
        eprintln!(
            "storage deal on chain {}:\n  file: {}\n  replicas: {replicas}\n  epochs: {}\n  price per replica per epoch: {}\n  deposit (unproven epochs are refunded): {}\n  transactions: approve (when the allowance is short), createDeal",
            client_chain(&args.global).await?,
            args.file.display(),
            args.epochs,
            crate::context::usdc(args.price),
            crate::context::format_usdc(deposit),
        );
        confirm(args.global.yes)?;
    } else if resuming.as_ref().is_some_and(FileRecord::uploaded) {
        eprintln!("{name:?} is uploaded; finishing its repair setup");
    } else {
        eprintln!("resuming the upload of {name:?}");
    }
    let options = PutOptions {
        name: args.name,
        replicas: args.replicas as usize,
        epochs: args.epochs,
        price_per_epoch: args.price,
    };
    let source = if args.nodes.is_empty() {
        NodeSource::Placement {
            coordinator: &coordinator,
            region: args.region.as_deref(),
        }
    } else {
        NodeSource::Given(&args.nodes)
    };
    // A file already uploaded whose repair is still to set up goes straight to that step.
    let uploaded = match &resuming {
        Some(r) if r.uploaded() && (r.repair.is_pending() || args.no_repair) => Ok(r.clone()),
        _ => {
            client
                .put_with(&args.file, &options, source, progress_lines())
                .await
        }
    };
    // Once the deal exists the repair is set up even when an upload failed: the repairer can
    // then rebuild the missing replica from another.
    let deal = client.live(&name)?.and_then(|r| r.deal);
    let repaired = match deal {
        Some(deal) if args.no_repair => client.decline_repair(&deal.to_string()).map(drop),
        Some(deal) => {
            if client.find(&deal.to_string())?.repair.is_pending() {
                eprintln!(
                    "handing deal {deal}'s repair to the orchestrator {}",
                    coordinator.base()
                );
            }
            client
                .set_up_repair(&deal.to_string(), &coordinator)
                .await
                .map(drop)
        }
        None => Ok(()),
    };
    let record = uploaded?;
    repaired?;
    let record = client.find(&record.deal.unwrap_or_default().to_string())?;
    let deposit = U256::from(record.price_per_epoch)
        * U256::from(record.epochs)
        * U256::from(record.replicas.len());
    Report::new(
        "stored",
        vec![
            ("name", json!(record.name)),
            ("deal", json!(record.deal)),
            ("bytes", json!(record.size)),
            ("chunks", json!(record.chunks)),
            ("segments", json!(record.segment_count)),
            ("epochs", json!(record.epochs)),
            ("deposit", money(deposit)),
            ("repair", repair_json(&record.repair)),
            (
                "replicas",
                Value::Array(
                    record
                        .replicas
                        .iter()
                        .map(|r| {
                            json!({ "node": r.node.to_string(), "url": r.url.to_string(), "root": hex_root(r.root) })
                        })
                        .collect(),
                ),
            ),
        ],
    )
    .print(args.global.json);
    Ok(())
}

async fn client_chain(global: &GlobalArgs) -> Result<u64, CliError> {
    let settings = Settings::from_process(global)?;
    Ok(Chain::read_only(&settings).await?.chain_id)
}

async fn get(args: GetArgs) -> Result<(), CliError> {
    let client = client(&args.global).await?;
    let out = match args.out {
        Some(out) => out,
        None => PathBuf::from(client.find(&args.file)?.name),
    };
    let record = client.get(&args.file, &out, progress_lines()).await?;
    Report::new(
        "fetched",
        vec![
            ("name", json!(record.name)),
            ("deal", json!(record.deal)),
            ("bytes", json!(record.size)),
            ("out", json!(out.display().to_string())),
            (
                "nodes",
                json!(
                    record
                        .replicas
                        .iter()
                        .map(|r| r.node.to_string())
                        .collect::<Vec<_>>()
                ),
            ),
        ],
    )
    .print(args.global.json);
    Ok(())
}

async fn ls(args: LsArgs) -> Result<(), CliError> {
    let client = client(&args.global).await?;
    let files = client.list().await?;
    // What following the deals on-chain found (moved replicas, nodes not found), on stderr.
    for f in &files {
        for note in &f.notes {
            eprintln!("{}: {note}", f.record.name);
        }
    }
    if args.global.json {
        let list: Vec<Value> = files
            .iter()
            .map(|f| {
                let r = &f.record;
                json!({
                    "name": r.name,
                    "deal": r.deal,
                    "bytes": r.size,
                    "replicas": r.replicas.len(),
                    "nodes": f.nodes.iter().map(B256::to_string).collect::<Vec<_>>(),
                    "uploaded": r.uploaded(),
                    "removed": r.removed,
                    "repair": repair_json(&r.repair),
                    "proven_epochs": f.deal.as_ref().map(|d| d.proven_epochs),
                    "epochs": r.epochs,
                    "current_epoch": f.deal.as_ref().map(|d| d.current_epoch),
                    "funds_left": f.deal.as_ref().map(|d| money(d.remaining)),
                    "settled": f.deal.as_ref().map(|d| d.settled),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "files": list })).expect("JSON serializes")
        );
        return Ok(());
    }
    if files.is_empty() {
        println!(
            "no stored files (index: {})",
            client.index().dir().display()
        );
        return Ok(());
    }
    println!(
        "{:<6} {:<24} {:>14} {:>8} {:>14} {:>20}  state; repair",
        "deal", "name", "bytes", "replicas", "proven/paid", "funds left"
    );
    for f in &files {
        let r = &f.record;
        let state = if r.removed {
            "removed: rm again once the deal ends for the refund"
        } else if f.deal.as_ref().is_some_and(DealState::ended) {
            "ended: rm settles it (refunds unproven epochs)"
        } else if !r.uploaded() {
            "upload incomplete: run put again"
        } else {
            "stored"
        };
        let proven = f.deal.as_ref().map_or("-".into(), |d| {
            format!(
                "{}/{}",
                d.proven_epochs,
                u64::from(d.epochs) * r.replicas.len() as u64
            )
        });
        let funds = f
            .deal
            .as_ref()
            .map_or("-".into(), |d| crate::context::format_usdc(d.remaining));
        println!(
            "{:<6} {:<24} {:>14} {:>8} {:>14} {:>20}  {state}; {}",
            r.deal.map_or("-".into(), |d| d.to_string()),
            r.name,
            r.size,
            r.replicas.len(),
            proven,
            funds,
            repair_words(&r.repair)
        );
        for (index, node) in f.nodes.iter().enumerate() {
            println!("       replica {index}: node {node}");
        }
    }
    Ok(())
}

async fn rm(args: RmArgs) -> Result<(), CliError> {
    let client = client(&args.global).await?;
    let record = client.find(&args.file)?;
    eprintln!(
        "removing {:?} (deal {}): every node deletes its replica; the deal's unproven epochs are refunded when it settles",
        record.name,
        record.deal.map_or("none".into(), |d| d.to_string())
    );
    confirm(args.global.yes)?;
    let removal = client.remove(&args.file).await?;
    let deletions: Vec<Value> = removal
        .deletions
        .iter()
        .map(|(node, error)| json!({ "node": node.to_string(), "deleted": error.is_none(), "error": error }))
        .collect();
    let mut fields = vec![
        ("name", json!(record.name)),
        ("deal", json!(removal.deal)),
        ("deletions", Value::Array(deletions)),
        ("deal_ended_now", json!(removal.ended)),
    ];
    match (removal.refunded, removal.settles_at_block) {
        (Some(refund), _) => fields.push(("refunded", money(refund))),
        (None, Some(block)) => fields.push((
            "refund",
            json!(format!(
                "the unproven replica-epochs are refunded when the deal settles: run `decloud storage rm {}` again from block {block}",
                removal.deal.map_or_else(|| record.name.clone(), |d| d.to_string())
            )),
        )),
        // Anyone may settle an ended deal; the refund then went to the owner already.
        (None, None) if removal.deal.is_some() => fields.push((
            "refund",
            json!("the deal was settled before: its refund was paid to the owner then"),
        )),
        (None, None) => {}
    }
    Report::new("removed", fields).print(args.global.json);
    if removal.deletions.iter().any(|(_, e)| e.is_some()) {
        return Err(CliError::Storage(StorageError::Invalid(
            "some nodes did not delete their replica (see above); they may drop it once the deal settles".into(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arguments_parse_or_say_why_not() {
        let id = format!("0x{}", "ab".repeat(32));
        let node = node_arg(&format!("{id}=http://127.0.0.1:7700")).unwrap();
        assert_eq!(node.node, B256::repeat_byte(0xab));
        assert_eq!(node.url.as_str(), "http://127.0.0.1:7700/");
        assert!(node_arg("http://x").unwrap_err().contains("NODE_ID=URL"));
        assert!(
            node_arg("0x12=http://x")
                .unwrap_err()
                .contains("not a node id")
        );
        assert!(
            node_arg(&format!("{id}=not a url"))
                .unwrap_err()
                .contains("not a URL")
        );
    }
}
