/** The orchestrator's HTTP API (`/api/v1`): errors come back as `{ error: { code, message } }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function apiFetch<T>(base: string, path: string, init: RequestInit & { token?: string | null } = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  if (init.body) headers.set('content-type', 'application/json');
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, { ...init, headers });
  } catch {
    throw new ApiError(0, 'unreachable', 'The DeCloud orchestrator cannot be reached. Check your connection and try again.');
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  const body = text ? (JSON.parse(text) as unknown) : undefined;
  if (!response.ok) {
    const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(response.status, error?.code ?? 'http_error', error?.message ?? `The orchestrator answered ${response.status}.`);
  }
  return body as T;
}

export interface NonceResponse {
  nonce: string;
  issued_at: number;
  expires_at: number;
  domains: string[];
  chain_ids: number[];
}

export interface SessionResponse {
  token: string;
  address: string;
  chain_id: number;
  expires_at: number;
  contract_wallet: boolean;
}

export interface SessionInfo {
  address: string;
  chain_id: number;
  expires_at: number;
}

export interface NodePrices {
  cpu_per_hour: number;
  memory_gib_per_hour: number;
  storage_gib_per_hour: number;
  gpu_per_hour: number;
}

export interface NodeListing {
  node_id: string;
  operator: string;
  region: string;
  status: string;
  vcpus: number;
  compute_points: number;
  memory_gib: number;
  disk_gib: number;
  gpus: number;
  prices: NodePrices;
  reputation: { online: boolean; uptime_bps: number | null; vms_hosted: number; vms_completed: number; last_heartbeat: number | null };
  free: { compute_units: number; memory_gib: number; disk_gib: number; gpus: number };
  /** The aggregate of its tenants' reviews. */
  rating?: RatingSummary;
  [key: string]: unknown;
}

export interface NodeSearchResponse {
  total: number;
  nodes: NodeListing[];
}

export interface TemplateRecord {
  slug?: string;
  name?: string;
  template_id?: number | string | null;
  [key: string]: unknown;
}

export interface LeaseRecord {
  lease_id: string;
  tenant: string;
  node_id: string;
  status: string;
  [key: string]: unknown;
}

export interface VmRecord {
  vm_id: string;
  lease_id: string;
  tenant: string;
  node_id: string;
  state: string;
  [key: string]: unknown;
}

export type PortProtocol = 'tcp' | 'udp';

export interface PortSpec {
  guest: number;
  protocol: PortProtocol;
}

export interface PortForward {
  guest: number;
  public: number;
  protocol: PortProtocol;
}

/** One HTTP port of a VM served over HTTPS by name through its node's ingress. */
export interface IngressUrl {
  guest: number;
  name: string;
  /** `https://<name>.<domain>` (with the port unless it is 443). */
  url: string;
  /** Whether the tenant chose the name (else it was derived from the VM and port). */
  chosen: boolean;
}

/** How a tenant reaches a VM (`access` of `GET /vms/{id}`). */
export interface VmAccess {
  public_address: string | null;
  addresses: string[];
  forwards: PortForward[];
  ports: PortSpec[];
  login_user: string | null;
  has_credentials: boolean;
  ssh_command: string | null;
  /** HTTPS names of the VM's HTTP ports (empty when the orchestrator has no ingress domain). */
  urls?: IngressUrl[];
  /** Whether the VM's node runs an ingress (null: not reported); false: HTTP ports are forwarded directly. */
  node_ingress?: boolean | null;
  /**
   * The relay the VM is reached through when its node accepts no inbound connections: then
   * `public_address` and `forwards` are the relay's, and the `urls` are served by the relay.
   */
  relay?: RelayEndpoint | null;
  /** Bytes relays carried for the VM, summed over every relay that ever carried it. */
  relay_traffic?: RelayTraffic | null;
}

/** A relay publishing a VM's ports (`access.relay` of `GET /vms/{id}`). */
export interface RelayEndpoint {
  relay_node_id: string;
  address: string;
  forwards: PortForward[];
}

/** Bytes carried by relays for one VM, cumulative. */
export interface RelayTraffic {
  bytes_in: number;
  bytes_out: number;
}

/** One service check of a VM (`readiness.services[]` of `GET /vms/{id}`), as its node last ran it. */
export interface ServiceReadiness {
  /** What is checked, in words (`tcp :5432`, `https :443/ expects 401`). */
  check: string;
  /** The check itself (`{ kind: 'tcp', port }`, …). */
  probe: { kind: string; [key: string]: unknown };
  state: 'ready' | 'not_ready';
  /** When the node last ran it, unix seconds; absent until it has. */
  checked_at?: number | null;
  /** Why it is not ready, when it is not. */
  detail?: string | null;
}

/** `readiness` of `GET /vms/{id}`: the VM's services as its node last reported them. */
export interface VmReadiness {
  /** Whether the VM runs and every check passed; absent until the node reports the VM. */
  ready?: boolean | null;
  /** When that report arrived, unix seconds (the orchestrator's clock). */
  reported_at?: number | null;
  services: ServiceReadiness[];
}

/** `GET /vms/{id}`: the VM, how to reach it and its services' readiness. */
export interface VmDetail extends VmRecord {
  access?: VmAccess;
  readiness?: VmReadiness;
}

/** `GET /vms/{id}/credentials`: the passwords sealed to the tenant's key. */
export interface SealedCredentials {
  vm_id: string;
  suite: string;
  sealing_key: string;
  sealed: string;
  created_at: number;
}

/** `GET /profile`: what the tenant's next VMs are set up with. */
export interface Profile {
  ssh_keys: string[];
  sealing_key: string | null;
  ports: PortSpec[];
}

/** `rating` of a node listing or a template: the aggregate of its reviews. */
export interface RatingSummary {
  count: number;
  stars: number;
  /** The mean in hundredths of a star (450 = 4.5 stars); absent without reviews. */
  mean_hundredths?: number | null;
}

export type ReviewSubject = 'node' | 'template';

/** A review as its tenant signed it (EIP-712) and anyone can verify it. */
export interface SignedReview {
  lease_id: string;
  subject: ReviewSubject;
  rating: number;
  text: string;
  chain_id: number;
  escrow: string;
  signature: string;
  reviewer: string;
}

/** `GET /reviews?node=…|template=…`: an accepted review, newest first. */
export interface ReviewView extends SignedReview {
  /** The node id, or the template's on-chain id. */
  target: string;
  created_at: number;
}
