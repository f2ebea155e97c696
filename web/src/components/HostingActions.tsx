import { useState } from 'react';
import { Link } from 'react-router-dom';
import { apiFetch } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { useSession } from '../lib/session';
import { useToasts } from '../lib/toasts';

interface Created {
  attestation_id: number;
}

/**
 * The hosting actions on a service (a VM): "Attest" has the orchestrator sign its current state,
 * "Distribute" records the intent to send a workload or artifact to regions. Both become signed,
 * anchored attestations anyone can verify.
 */
export function HostingActions({ vmId }: { vmId: string }) {
  const config = useAppConfig();
  const { session } = useSession();
  const toasts = useToasts();
  const [kind, setKind] = useState('workload');
  const [artifact, setArtifact] = useState('');
  const [sha256, setSha256] = useState('');
  const [regions, setRegions] = useState('');
  const [busy, setBusy] = useState(false);
  const [last, setLast] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function run(label: string, path: string, body?: unknown) {
    setError(null);
    setBusy(true);
    const toast = toasts.show('pending', `${label}: asking the orchestrator…`);
    try {
      const created = await apiFetch<Created>(config.apiUrl, path, {
        method: 'POST',
        token: session?.token,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      setLast(created.attestation_id);
      toasts.show('success', `${label}: signed as attestation #${created.attestation_id}.`, toast);
    } catch (e) {
      const words = explainError(e);
      setError(words);
      toasts.show('error', `${label} failed: ${words}`, toast);
    } finally {
      setBusy(false);
    }
  }

  async function hashFile(file: File | undefined) {
    if (!file) return;
    const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
    setSha256([...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join(''));
    if (!artifact) setArtifact(file.name);
  }

  function distribute(e: React.FormEvent) {
    e.preventDefault();
    const list = regions
      .split(',')
      .map((r) => r.trim())
      .filter(Boolean);
    if (!artifact.trim()) return setError('Name the workload or artifact.');
    if (!/^[0-9a-fA-F]{64}$/.test(sha256.trim())) return setError('The SHA-256 is 64 hex digits: choose the file to compute it here.');
    if (list.length === 0) return setError('Name at least one region.');
    void run('Distribute', `/hosting/services/${encodeURIComponent(vmId)}/distribute`, {
      kind,
      artifact: artifact.trim(),
      sha256: sha256.trim().toLowerCase(),
      regions: list,
    });
  }

  return (
    <section className="card" aria-labelledby="hosting-heading">
      <h2 id="hosting-heading">Hosting actions</h2>
      <button type="button" disabled={busy} onClick={() => void run('Attest', `/hosting/services/${encodeURIComponent(vmId)}/attest`)}>
        Attest
      </button>{' '}
      <span className="muted">The orchestrator signs this service's current state.</span>
      <form onSubmit={distribute} aria-label="Distribute">
        <h3>Distribute</h3>
        <div className="grid2">
          <label>
            Kind
            <select name="kind" value={kind} onChange={(e) => setKind(e.target.value)}>
              <option value="workload">Workload (VM image, container)</option>
              <option value="artifact">Artifact (file, bundle)</option>
            </select>
          </label>
          <label>
            File (hashed here, never uploaded)
            <input name="file" type="file" onChange={(e) => void hashFile(e.target.files?.[0])} />
          </label>
          <label>
            Name or content id
            <input name="artifact" value={artifact} onChange={(e) => setArtifact(e.target.value)} />
          </label>
          <label>
            SHA-256
            <input name="sha256" className="mono" value={sha256} onChange={(e) => setSha256(e.target.value)} />
          </label>
          <label>
            Regions (comma-separated)
            <input name="regions" value={regions} onChange={(e) => setRegions(e.target.value)} placeholder="eu-west, us-east" />
          </label>
        </div>
        <button type="submit" disabled={busy}>
          Distribute
        </button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {last !== null && (
        <p>
          Last: attestation #{last}. <Link to="/attestations">Verify it</Link> under the subject <code>vm:{vmId}</code>.
        </p>
      )}
    </section>
  );
}
