//! Command-line interface definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Lanyard: workload identity without static secrets.
///
/// Workloads prove what they are by attestation and get short-lived,
/// audience-scoped, tenant-bound credentials. Start with `lanyard dev`.
#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Output format for results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Log format (logs go to stderr; filter with LANYARD_LOG, e.g. LANYARD_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Server URL for admin commands (default: from --data-dir's dev.json).
    #[arg(long, global = true, env = "LANYARD_SERVER")]
    pub server: Option<String>,
    /// Admin bearer token. Prefer LANYARD_ADMIN_TOKEN or --admin-token-file:
    /// a token on the command line is visible to every user of the machine
    /// (ps, /proc/PID/cmdline) and lands in shell history. Default: from
    /// --data-dir's dev.json.
    #[arg(
        long,
        global = true,
        env = "LANYARD_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,
    /// File holding the admin bearer token (e.g. the --token-file written by
    /// `lanyard server init`); surrounding whitespace is ignored.
    #[arg(long, global = true, env = "LANYARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for the server's TLS certificate.
    #[arg(long, global = true, env = "LANYARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Data directory of `lanyard dev`; admin commands read dev.json from it.
    #[arg(long, global = true, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run server and agent in one process for development, on SQLite in
    /// --data-dir (default ./.lanyard-dev), plain HTTP on loopback.
    ///
    /// Creates the `dev` tenant, the trust domain (--trust-domain, default
    /// example.org), signing keys and an admin token on first start, and
    /// writes DATA_DIR/dev.json (issuer, admin_token, workload_socket,
    /// bundle_endpoint, federation_bundle_endpoint and
    /// federation_endpoint_spiffe_id: the https_spiffe bundle endpoint
    /// another trust domain federates with). Restarting on the same
    /// directory keeps keys, tenants and the admin token.
    Dev(DevArgs),
    /// Run the identity server from a config file, or initialise its store.
    Server(ServerArgs),
    /// Manage tenants (every entry, token and lease belongs to one).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Inspect and rotate the JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Trusted external issuers whose tokens are evidence (Kubernetes, GitHub Actions, GitLab, OIDC).
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Registration entries: selectors -> SPIFFE ID, per tenant.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// How tokens for one audience (a cloud, OpenBao) are issued: signing
    /// algorithm and a subject template, per tenant or per entry.
    ///
    /// Azure Entra allows 20 federated credentials per identity and matches
    /// `sub` exactly; a template such as tenant/{tenant}/role/{role} lets one
    /// credential cover every workload of a role. Recipes: docs/federation/.
    #[command(subcommand)]
    AudienceProfile(AudienceProfileCommand),
    /// RFC 8693 token exchange client.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke evidence or identities; refused at exchange at once on this
    /// replica, within seconds on the others.
    Revoke(RevokeArgs),
    /// Read and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the whole token-exchange decision without issuing anything and
    /// print every step: why an identity was or was not issued. With --pid,
    /// show what the node agent sees of a local process instead: its
    /// selectors and the entries it matches or nearly matches.
    Explain(ExplainArgs),
    /// Dynamic credentials: PostgreSQL login roles that live minutes, for
    /// identities whose entry grants them (`lanyard entry create … --grant appdb/readonly`).
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Run the node agent: attest this node, serve the SPIFFE Workload API
    /// on a Unix socket, keep SVIDs rotated (see README, "Node agent").
    Agent(AgentArgs),
    /// One-time node bootstrap tokens for VMs (cloud-init).
    #[command(subcommand)]
    Jointoken(JoinTokenCommand),
    /// SPIFFE Workload API client: fetch this process's X.509 or JWT SVIDs.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// Attested nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Kubernetes admission webhooks: pods get workload identity (Azure
    /// Workload Identity, EKS and Lanyard conventions), SpinApps are checked.
    ///
    /// `lanyard webhook --config F` serves them over HTTPS; `lanyard webhook
    /// render --pod F` shows what they would do to one pod, without a cluster.
    /// Guides: docs/kubernetes/.
    Webhook(WebhookArgs),
    /// SPIFFE federation: trust other trust domains (SPIRE or Lanyard) by
    /// fetching their bundles from their bundle endpoints.
    ///
    /// A relationship is one-way: this server trusts the peer's SVIDs;
    /// mutual trust needs a relationship on each side. Workloads receive a
    /// foreign bundle only if their entry says `--federates-with TD`, and a
    /// foreign JWT-SVID is exchanged only where an entry maps its SPIFFE ID
    /// (`--selector spiffe:id:spiffe://other.org/...`). Guide:
    /// docs/federation/spiffe.md.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Trust bundles: this trust domain's (show), and other trust domains'
    /// set by hand (set, list, delete), e.g. from `spire-server bundle show
    /// -format spiffe`.
    #[command(subcommand)]
    Bundle(BundleCommand),
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Federate with a trust domain: fetch its bundle from its endpoint,
    /// now and then at the refresh hint it publishes.
    ///
    /// With https_spiffe (the usual profile; SPIRE's and Lanyard's default)
    /// the endpoint's SVID is verified against the latest bundle of its
    /// trust domain, so the first fetch needs a bootstrap bundle obtained
    /// out of band (--initial-bundle). With https_web the endpoint has a
    /// Web PKI certificate.
    ///
    /// Example: lanyard federation add --trust-domain other.org
    ///   --bundle-endpoint https://spire.other.org:8443
    ///   --profile https_spiffe --endpoint-spiffe-id spiffe://other.org/spire/server
    ///   --initial-bundle other.org.json --tenant payments
    Add(FederationAddArgs),
    /// Relationships with their last refresh, sequence, next refresh and last error.
    List,
    /// One relationship, with the bundle held.
    Show {
        /// The trust domain, e.g. other.org.
        trust_domain: String,
    },
    /// Fetch the trust domain's bundle now. Exit status 1 when the fetch
    /// failed or the bundle was refused (the held bundle stays).
    Refresh {
        /// The trust domain.
        trust_domain: String,
    },
    /// End the relationship: stop fetching and drop the trust domain's
    /// bundle (refused while entries federate with it or map its IDs).
    Delete {
        /// The trust domain.
        trust_domain: String,
    },
}

#[derive(Debug, Args)]
pub struct FederationAddArgs {
    /// The peer's trust domain (never inferred from the URL).
    #[arg(long)]
    pub trust_domain: String,
    /// The peer's bundle endpoint URL (https://).
    #[arg(long)]
    pub bundle_endpoint: String,
    /// https_spiffe (endpoint presents an X.509-SVID) or https_web (Web PKI).
    #[arg(long, default_value = "https_spiffe")]
    pub profile: String,
    /// https_spiffe: the SPIFFE ID the endpoint presents (SPIRE:
    /// spiffe://TD/spire/server; Lanyard: spiffe://TD/lanyard/server).
    #[arg(long)]
    pub endpoint_spiffe_id: Option<String>,
    /// The peer's bundle, obtained out of band, to verify the first fetch:
    /// SPIFFE JSON (`lanyard bundle show`, `spire-server bundle show
    /// -format spiffe`) or PEM.
    #[arg(long)]
    pub initial_bundle: Option<PathBuf>,
    /// The tenant the peer's workloads are in when their JWT-SVIDs are
    /// exchanged here. Without it their JWT-SVIDs are refused.
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// This trust domain's bundle (what peers federate with), or with
    /// --trust-domain a foreign one held here.
    Show {
        /// spiffe (JSON, the default) or pem (X.509 authorities only).
        #[arg(long, default_value = "spiffe")]
        format: String,
        /// A federated trust domain instead of our own.
        #[arg(long)]
        trust_domain: Option<String>,
    },
    /// Set a trust domain's bundle by hand (static federation): SPIFFE JSON
    /// or PEM, including what `spire-server bundle show -format spiffe` prints.
    Set {
        /// The trust domain the bundle is of.
        #[arg(long)]
        trust_domain: String,
        /// The bundle file ("-" reads standard input).
        #[arg(long)]
        file: PathBuf,
        /// The tenant its workloads' JWT-SVIDs are bound to here.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Foreign bundles held (set by hand or fetched).
    List,
    /// Drop a bundle set by hand.
    Delete {
        /// The trust domain.
        #[arg(long)]
        trust_domain: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebhookArgs {
    /// Webhook TOML config: [webhook] listen, tls_cert, tls_key (reloaded when
    /// they change), kubeconfig, on_api_error = "deny"|"allow"; optional
    /// [webhook.azure] tenant_id, cloud, token_layout = "v1.6"|"v1.5";
    /// [webhook.aws] region; [webhook.lanyard] audience.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<WebhookAction>,
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Show what the webhook does to one pod, running exactly its code path:
    /// the patch, the resulting pod, warnings, or why it would be refused.
    ///
    /// This is how to debug "why did my pod not get the token". The file may
    /// hold a Pod, or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
    /// CronJob (its pod template is used, named as its ReplicaSet would name
    /// it). Without --service-account the service account is treated as not
    /// found, as the API server would answer for one that does not exist.
    ///
    /// Exit status: 0 when the pod would be admitted, 1 when refused.
    ///
    /// Example: lanyard webhook render --pod deploy.yaml --service-account sa.yaml
    ///   --config webhook.toml --output json
    Render(WebhookRenderArgs),
}

#[derive(Debug, Args)]
pub struct WebhookRenderArgs {
    /// The pod (or workload) as YAML or JSON.
    #[arg(long)]
    pub pod: PathBuf,
    /// Its ServiceAccount as YAML or JSON (`kubectl get sa NAME -o yaml`).
    #[arg(long)]
    pub service_account: Option<PathBuf>,
    /// Namespace of the pod (default: the file's metadata.namespace, else default).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The webhook's config; without it every convention is on with
    /// upstream's defaults and no default Azure tenant.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Agent TOML config (server_address, trust_domain, trust_bundle,
    /// join_token_file, state_dir, socket, [[files]], [metadata]).
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a one-time join token for a node.
    ///
    /// Example: lanyard jointoken create --node-id web-1 --ttl 10m --cloud-init
    ///   --server-address lanyard.example.org:8081 > user-data.yaml
    Create {
        /// The node's id; it becomes spiffe://TD/lanyard/node/ID.
        #[arg(long)]
        node_id: String,
        /// How long the token can be used (once).
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// Extra node selectors (repeatable).
        #[arg(long)]
        selector: Vec<String>,
        /// Print a ready #cloud-config user-data snippet instead of the token.
        #[arg(long)]
        cloud_init: bool,
        /// The server's node API address for the cloud-init snippet.
        #[arg(long)]
        server_address: Option<String>,
    },
    /// List join tokens (never their secrets).
    List,
}

#[derive(Debug, Subcommand)]
pub enum SvidCommand {
    /// Fetch SVIDs from the Workload API (socket: --socket,
    /// SPIFFE_ENDPOINT_SOCKET, or --data-dir's dev.json).
    Fetch(SvidFetchArgs),
}

#[derive(Debug, Args)]
pub struct SvidFetchArgs {
    /// Workload API socket (path or unix:PATH).
    #[arg(long)]
    pub socket: Option<String>,
    /// Fetch a JWT-SVID instead of an X.509-SVID.
    #[arg(long)]
    pub jwt: bool,
    /// Audience for the JWT-SVID (repeatable).
    #[arg(long)]
    pub audience: Vec<String>,
    /// Only this SPIFFE ID (when the process has several).
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// Write svid.pem, svid.key (0600), bundle.pem (or token.jwt) to DIR.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Keep running and print (and write) every rotation.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List attested nodes.
    List,
}

// `Add` carries many flags; the enum is built once per process, so its size
// does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Trust an issuer's tokens as evidence.
    ///
    /// Example: lanyard issuer add --name prod --kind kubernetes
    ///   --issuer https://kubernetes.default.svc.cluster.local
    ///   --discovery --audience lanyard --tenant payments
    Add(IssuerAddArgs),
    /// List trusted issuers.
    List,
    /// Show one issuer's configuration.
    Show { name: String },
    /// Stop trusting an issuer.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct IssuerAddArgs {
    /// Name used by entries (--issuer) and in audit events.
    #[arg(long)]
    pub name: String,
    /// kubernetes only: the cluster's name; its tokens get the selector
    /// k8s:cluster:NAME (default: --name). Add one issuer per cluster: the
    /// same namespace and service account in two clusters are different
    /// workloads, and entries say which cluster (--issuer, or
    /// --selector k8s:cluster:NAME) they mean.
    #[arg(long)]
    pub cluster: Option<String>,
    /// kubernetes | github-actions | gitlab | oidc.
    #[arg(long)]
    pub kind: String,
    /// The exact `iss` of its tokens.
    #[arg(long)]
    pub issuer: String,
    /// Static JWKS file (public keys).
    #[arg(long, group = "keys")]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL, fetched with timeouts and cached.
    #[arg(long, group = "keys")]
    pub jwks_url: Option<String>,
    /// Find the JWKS through {issuer}/.well-known/openid-configuration.
    #[arg(long, group = "keys")]
    pub discovery: bool,
    /// Kubernetes TokenReview URL (the API server validates each token).
    #[arg(long, group = "keys")]
    pub token_review_url: Option<String>,
    /// Bearer token file for TokenReview calls.
    #[arg(long, requires = "token_review_url")]
    pub token_review_bearer_file: Option<PathBuf>,
    /// CA certificate (PEM) of the TokenReview server.
    #[arg(long, requires = "token_review_url")]
    pub token_review_ca_file: Option<PathBuf>,
    /// The audience its tokens must carry for Lanyard.
    #[arg(long)]
    pub audience: String,
    /// Bind every token of this issuer to this tenant.
    #[arg(long, group = "tenant_source")]
    pub tenant: Option<String>,
    /// Read the tenant from this claim (JSON pointer, e.g. /tenant).
    #[arg(long, group = "tenant_source")]
    pub tenant_claim: Option<String>,
    /// Allowed algorithms (repeatable; default ES256 and RS256).
    #[arg(long = "alg")]
    pub algs: Vec<String>,
    /// Longest token lifetime accepted (exp - iat).
    #[arg(long, default_value = "24h")]
    pub max_token_lifetime: String,
    /// Accept legacy secret-based Kubernetes service-account tokens (never expire; avoid).
    #[arg(long)]
    pub insecure_allow_legacy_tokens: bool,
    /// Allow http:// key URLs (tests on loopback only).
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Register an identity. Example:
    /// lanyard entry create --spiffe-id spiffe://example.org/ns/payments/sa/api
    ///   --tenant payments --selector k8s:ns:payments --selector k8s:sa:api --audience api://x
    Create(EntryArgs),
    /// List entries.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one entry.
    Show { id: String },
    /// Replace an entry's settings (give every flag you want kept).
    Update {
        id: String,
        #[command(flatten)]
        args: EntryArgs,
    },
    /// Delete an entry.
    Delete { id: String },
    /// Make the entries match a file (declarative, idempotent). The file is
    /// YAML or JSON: a list of entries with the fields `lanyard entry list
    /// --output json` prints (that output itself is a valid file; `id` and
    /// `created_at` are optional). An entry is the stored one with the same
    /// id, or else with the same issuer, parent and selectors. Example:
    ///
    ///   - spiffe_id: spiffe://example.org/ns/pay/sa/api
    ///     selectors: [k8s:ns:pay, k8s:sa:api, k8s:cluster:prod]
    ///     audiences: [api://x]
    ///
    /// lanyard entry apply -f entries.yaml --tenant pay --prune --dry-run
    ///
    /// Applying the same file again changes nothing and says so. Changes are
    /// committed in transactions of 1000, each change audited.
    Apply {
        /// The file (`-` reads standard input).
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        /// Only this tenant: entries without a tenant get it, entries of
        /// another tenant are refused, and --prune deletes only its entries.
        #[arg(long)]
        tenant: Option<String>,
        /// Delete the entries of the scope (--tenant, or else the tenants
        /// the file names) that the file does not list.
        #[arg(long)]
        prune: bool,
        /// Print the plan (create/update/delete lines) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct EntryArgs {
    /// The SPIFFE ID granted.
    #[arg(long)]
    pub spiffe_id: String,
    /// Owner tenant.
    #[arg(long)]
    pub tenant: String,
    /// TYPE:KEY:VALUE, repeatable; all must match (e.g. k8s:ns:payments, gha:repository:acme/api).
    #[arg(long = "selector", required = true)]
    pub selectors: Vec<String>,
    /// Only evidence from this trusted issuer matches.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Node agent entry: the node (spiffe://TD/lanyard/node/ID) whose agent
    /// serves this identity to local processes. Under `lanyard dev`, entries
    /// with only unix: selectors default to the built-in agent's node.
    #[arg(long)]
    pub parent: Option<String>,
    /// DNS SANs for X.509-SVIDs (repeatable).
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Audiences tokens may be issued for (repeatable; any when none).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Default token lifetime, e.g. 5m.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Longest lifetime a caller may request.
    #[arg(long)]
    pub max_ttl: Option<String>,
    /// Scopes granted (repeatable); requests can only narrow them.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Actors allowed to act for this identity: SPIFFE IDs or prefixes ending in /* (repeatable).
    #[arg(long = "may-act")]
    pub may_act: Vec<String>,
    /// May call the admin API with its SVID.
    #[arg(long)]
    pub admin: bool,
    /// May review other workloads' tokens at the TokenReview endpoint
    /// (/apis/authentication.k8s.io/v1/tokenreviews) with a JWT-SVID for
    /// audience SERVER/tokenreview.
    #[arg(long)]
    pub token_reviewer: bool,
    /// Broker roles this identity may get credentials for, as backend/role (repeatable).
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// Role for audience profiles' {role} (letters, digits, '.', '_', '-'):
    /// workloads sharing a role share one cloud federated credential.
    #[arg(long)]
    pub role: Option<String>,
    /// Node agent entry: also hand the workload this federated trust
    /// domain's bundle, so it can authenticate that trust domain's
    /// workloads (repeatable; see `lanyard federation`).
    #[arg(long = "federates-with")]
    pub federates_with: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AudienceProfileCommand {
    /// Add a profile. Examples:
    ///
    /// lanyard audience-profile add --audience api://AzureADTokenExchange --tenant payments
    ///   --algorithm RS256 --subject-template 'tenant/{tenant}/role/{role}'
    ///
    /// lanyard audience-profile add --audience sts.amazonaws.com --algorithm ES256
    Add(AudienceProfileArgs),
    /// List profiles (with --tenant: that tenant's and those for every tenant).
    List {
        /// Only profiles that apply to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a profile; tokens for its audience go back to the defaults.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct AudienceProfileArgs {
    /// The audience, matched exactly (e.g. api://AzureADTokenExchange,
    /// sts.amazonaws.com, //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R).
    #[arg(long)]
    pub audience: String,
    /// Apply to this tenant's entries only (required with --subject-template
    /// unless --entry is given). Without --tenant and --entry: every tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Apply to this entry only (its tenant is implied); wins over a tenant's profile.
    #[arg(long)]
    pub entry: Option<String>,
    /// Sign with ES256 or RS256 (Azure Entra: RS256). Default: the server's first algorithm.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// The token's `sub` instead of the SPIFFE ID. Variables: {tenant} (required,
    /// exactly once, as a whole segment), {role} (the entry's --role),
    /// {trust_domain}, {spiffe_path}, {entry}.
    #[arg(long)]
    pub subject_template: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Exchange a subject token (and optional actor token) for a JWT-SVID.
    Exchange(ExchangeArgs),
}

#[derive(Debug, Args)]
pub struct ExchangeArgs {
    /// File with the subject token ('-' for stdin).
    #[arg(long)]
    pub subject_token: PathBuf,
    /// Subject token type.
    #[arg(long, default_value = "urn:ietf:params:oauth:token-type:jwt")]
    pub subject_token_type: String,
    /// File with the actor token, for delegation.
    #[arg(long)]
    pub actor_token: Option<PathBuf>,
    /// Audience of the issued token (repeatable).
    #[arg(long = "audience", required = true)]
    pub audiences: Vec<String>,
    /// Space-separated scopes (must be within what is granted).
    #[arg(long)]
    pub scope: Option<String>,
    /// Tenant the caller expects; a mismatch is refused.
    #[arg(long)]
    pub tenant: Option<String>,
    /// urn:ietf:params:oauth:token-type:jwt (default) or ...:access_token.
    #[arg(long)]
    pub requested_token_type: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RevokeArgs {
    #[command(subcommand)]
    pub action: Option<RevokeAction>,
    #[command(flatten)]
    pub target: Option<RevokeTarget>,
    /// Why (recorded in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Until when: RFC 3339 time or a duration from now (e.g. 24h). Forever when absent.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
#[derive(Default)]
pub struct RevokeTarget {
    /// A token id.
    #[arg(long)]
    pub jti: Option<String>,
    /// A SPIFFE ID (every token for it, subject or actor).
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// A Kubernetes service account uid.
    #[arg(long)]
    pub k8s_sa_uid: Option<String>,
    /// A Kubernetes pod uid.
    #[arg(long)]
    pub k8s_pod_uid: Option<String>,
    /// A registration entry id.
    #[arg(long)]
    pub entry: Option<String>,
    /// ISSUER:SUBJECT of an external token.
    #[arg(long)]
    pub subject: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RevokeAction {
    /// Revocations in force.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest events; --follow keeps printing new ones.
    Tail {
        /// How many to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        /// Keep polling for new events (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
    },
    /// Every event since a time, as JSON lines.
    Export {
        /// RFC 3339 time or a duration ago (e.g. 1h); everything when absent.
        #[arg(long)]
        since: Option<String>,
    },
    /// Recompute the hash chain and check it ends at the stored head; exit 1
    /// and name the first broken sequence on tampering.
    ///
    /// With --checkpoint, also check that the log still holds exactly the
    /// state a signed checkpoint recorded (catches truncation, a rollback to
    /// a backup, and a chain rewritten from an earlier point). The
    /// checkpoint's signature is checked with the server's published audit
    /// keys (or --audit-keys FILE).
    Verify {
        /// A checkpoint: a line of the checkpoint file (the last one is
        /// used), or the output of `lanyard audit checkpoint --output json`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The published audit keys (JWKS) to check it with; default: fetched
        /// from the server's /.well-known/lanyard-audit-keys.json.
        #[arg(long, requires = "checkpoint")]
        audit_keys: Option<PathBuf>,
    },
    /// The newest signed checkpoint of the audit log (--now signs one first).
    /// Keep checkpoints somewhere the database's writers cannot reach; the
    /// server also appends each one to [audit] checkpoint_file.
    Checkpoint {
        /// Sign a checkpoint of the log as it is now.
        #[arg(long)]
        now: bool,
    },
    /// The events of one correlation id (printed in every response and denial).
    Show { correlation_id: String },
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// File with the subject token ('-' for stdin).
    #[arg(long, required_unless_present = "pid")]
    pub subject_token: Option<PathBuf>,
    /// A local process: show its selectors as the node agent attests them and
    /// which of the node's entries match or nearly match.
    #[arg(long, conflicts_with = "subject_token")]
    pub pid: Option<i32>,
    /// The node whose entries to check with --pid (default: lanyard dev's node).
    #[arg(long, requires = "pid")]
    pub node: Option<String>,
    /// File with the actor token.
    #[arg(long)]
    pub actor_token: Option<PathBuf>,
    /// Audience to check (repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Tenant to check.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Scopes to check (space-separated).
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to listen on; 127.0.0.1:0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Lifetime of X.509-SVIDs (the agent renews them at half-life); short
    /// values let you watch rotation, e.g. 30s.
    #[arg(long, default_value = "1h")]
    pub svid_ttl: String,
    /// SPIFFE trust domain of this dev server (every SPIFFE ID it issues is
    /// spiffe://TRUST_DOMAIN/...). Fixed when the data directory is first
    /// created; two dev servers with different trust domains can federate.
    #[arg(long, default_value = "example.org")]
    pub trust_domain: String,
    /// Serve the Delegated Identity API on DATA_DIR/admin.sock and let
    /// callers holding this SPIFFE ID use it (repeatable).
    #[arg(long = "delegate", value_name = "SPIFFE_ID")]
    pub delegates: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// TOML config file (see README, "Configuration"). Keys can be overridden
    /// with LANYARD__SECTION__KEY environment variables.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Serve plain HTTP. Allowed only on a loopback listen address.
    #[arg(long)]
    pub insecure_plain_http: bool,
    #[command(subcommand)]
    pub action: Option<ServerAction>,
}

#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Create the schema and signing keys, and print a new admin token once.
    Init {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Write the admin token to this new file (mode 0600) instead of stdout.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve plain HTTP later (accepted for symmetry; validated like `server`).
        #[arg(long)]
        insecure_plain_http: bool,
    },
    /// Rotate the key-encryption key: re-seal every signing key under a new
    /// KEK (one transaction, audited). Stop the servers first, then point
    /// keys.kek_file at the new file and start them.
    Rekey {
        /// TOML config file (its KEK is the current one).
        #[arg(long, short)]
        config: PathBuf,
        /// The new KEK file (0600; create one with `head -c 32 /dev/urandom | base64`).
        #[arg(long)]
        new_kek_file: PathBuf,
        /// Accepted like `server` so the same config validates.
        #[arg(long)]
        insecure_plain_http: bool,
    },
    /// After restoring the store from a backup, before starting the servers:
    /// start a new change-log epoch, so every agent resyncs in full (an
    /// agent never accepts an older revision within an epoch, and the
    /// restored log is older than what agents have seen). Audited.
    NewEpoch {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Accepted like `server` so the same config validates.
        #[arg(long)]
        insecure_plain_http: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant. NAME is a DNS label: lowercase letters, digits, '-'.
    Create {
        name: String,
        /// Free-text description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { name: String },
    /// Delete a tenant.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List published signing keys (active, next, previous); no key material.
    List,
    /// Rotate now: the pre-published next key takes over as soon as it has
    /// been published for the configured lead time (at once if it has).
    Rotate {
        /// Algorithm to rotate (default: the server's first algorithm).
        #[arg(long)]
        alg: Option<String>,
        /// The active key is compromised: remove it from the JWKS now and
        /// sign with the next key at once. Tokens it signed stop verifying.
        #[arg(long)]
        compromised: bool,
    },
}

/// Installs the tracing subscriber: stderr, text or JSON, filtered by LANYARD_LOG.
pub fn init_logging(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LANYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Credential backends (PostgreSQL servers Lanyard creates users on).
    #[command(subcommand)]
    Backend(BrokerBackendCommand),
    /// Broker roles: what a credential may do (SQL templates) and how long it lives.
    #[command(subcommand)]
    Role(BrokerRoleCommand),
    /// Leases on issued credentials.
    #[command(subcommand)]
    Lease(BrokerLeaseCommand),
    /// Get a credential as a workload: a JWT-SVID (from the Workload API socket
    /// or a token file) for audience <server>/broker, exchanged for a PostgreSQL
    /// user. Example:
    /// lanyard broker creds appdb/readonly --socket /run/lanyard/workload.sock --format env
    Creds(BrokerCredsArgs),
}

#[derive(Debug, Subcommand)]
pub enum BrokerBackendCommand {
    /// Add a backend. Lanyard logs in once to check, then keeps the URL without
    /// its password and the password sealed with the KEK. The user needs
    /// CREATEROLE and ADMIN OPTION on the roles your templates grant. Example:
    /// lanyard broker backend add postgres --name appdb --url postgres://lanyard:PW@db:5432/app
    Add {
        /// Backend kind.
        #[arg(value_enum)]
        kind: BackendKind,
        /// Name, used in grants (appdb/readonly).
        #[arg(long)]
        name: String,
        /// postgres://USER:PASSWORD@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=…]
        #[arg(long, env = "LANYARD_BROKER_URL", hide_env_values = true)]
        url: String,
    },
    /// List backends (never with passwords).
    List,
    /// Replace the backend's admin password with a generated one that only
    /// Lanyard knows.
    RotateRoot {
        /// Backend name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Postgres,
}

#[derive(Debug, Subcommand)]
pub enum BrokerRoleCommand {
    /// Add a role. The creation SQL must use "{{name}}" and '{{password}}' and
    /// may use '{{expiration}}'; the revocation SQL may use "{{name}}" (the user
    /// is dropped after it either way). Example creation SQL:
    /// CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
    /// GRANT readonly TO "{{name}}";
    Add {
        /// backend/role, e.g. appdb/readonly.
        role: String,
        /// File with the creation SQL template.
        #[arg(long)]
        creation_sql: PathBuf,
        /// File with the revocation SQL template (optional).
        #[arg(long)]
        revocation_sql: Option<PathBuf>,
        /// Default lease lifetime.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Longest a lease may live, renewals included.
        #[arg(long, default_value = "1h")]
        max_ttl: String,
    },
    /// List roles.
    List,
}

#[derive(Debug, Subcommand)]
pub enum BrokerLeaseCommand {
    /// List leases (newest last).
    List {
        /// Only leases whose revocation the backend has not confirmed yet.
        #[arg(long)]
        pending_revocation: bool,
        /// Only active leases.
        #[arg(long, conflicts_with = "pending_revocation")]
        active: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a lease now (the user is dropped; retried if the backend is down).
    Revoke {
        /// Lease id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct BrokerCredsArgs {
    /// backend/role, e.g. appdb/readonly.
    pub role: String,
    /// SPIFFE Workload API socket to get the JWT-SVID from (path or unix:PATH).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", conflicts_with = "token_file")]
    pub socket: Option<String>,
    /// File holding a JWT-SVID for audience <server>/broker ('-' for stdin).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Requested lease lifetime (capped by the role's max TTL).
    #[arg(long)]
    pub ttl: Option<String>,
    /// What to print: a libpq connection URI, shell `export` lines (PGUSER,
    /// PGPASSWORD, …, LANYARD_LEASE_ID), or JSON (also with --output json).
    #[arg(long, value_enum, default_value_t = CredsFormat::Uri)]
    pub format: CredsFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredsFormat {
    Uri,
    Env,
    Json,
}
