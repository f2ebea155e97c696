import { useState } from 'react';
import { usePublicClient } from 'wagmi';
import { apiFetch } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { type AttestationView, type Check, type EvidenceView, type SignerView, verifyAttestation } from '../lib/attest';
import { explainError } from '../lib/errors';

/** Look up the attestations of any subject, and verify any of them here in the browser. */
export function AttestationsPage() {
  const config = useAppConfig();
  const client = usePublicClient();
  const [subject, setSubject] = useState('');
  const [list, setList] = useState<AttestationView[] | null>(null);
  const [verdicts, setVerdicts] = useState<Record<number, Check[]>>({});
  const [error, setError] = useState<string | null>(null);

  async function search(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setList(null);
    if (!subject.trim()) return setError('Enter a subject, like vm:vm-1, lease:1 or node:0x…');
    try {
      setList(await apiFetch<AttestationView[]>(config.apiUrl, `/attestations?subject=${encodeURIComponent(subject.trim())}`));
    } catch (err) {
      setError(explainError(err));
    }
  }

  async function verify(sequence: number) {
    if (!client) return;
    try {
      const [signer, evidence] = await Promise.all([
        apiFetch<SignerView>(config.apiUrl, '/attestations/signer'),
        apiFetch<EvidenceView>(config.apiUrl, `/attestations/${sequence}`),
      ]);
      const previous =
        sequence > 0 ? (await apiFetch<EvidenceView>(config.apiUrl, `/attestations/${sequence - 1}`)).attestation : null;
      const checks = await verifyAttestation(client, config.contracts.attestationAnchor, config.chainId, signer, evidence, previous);
      setVerdicts((v) => ({ ...v, [sequence]: checks }));
    } catch (err) {
      setVerdicts((v) => ({ ...v, [sequence]: [{ name: 'Lookup', ok: false, detail: explainError(err) }] }));
    }
  }

  return (
    <>
      <h1>Attestations</h1>
      <p>
        Everything the orchestrator does is signed, chained to what it did before and anchored on-chain. Verification runs here, in your
        browser: nothing is taken on trust from the server but the data to check.
      </p>
      <form className="card" onSubmit={(e) => void search(e)} aria-label="Find attestations">
        <label>
          Subject
          <input name="subject" value={subject} onChange={(e) => setSubject(e.target.value)} placeholder="vm:vm-1, lease:1, node:0x…" />
        </label>
        <button type="submit">Find</button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </form>
      {list?.length === 0 && <p className="muted">No attestation about this subject.</p>}
      {list?.map((a) => {
        const checks = verdicts[a.sequence];
        const valid = checks?.every((c) => c.ok);
        return (
          <article className="card" key={a.sequence} data-testid={`attestation-${a.sequence}`}>
            <h2>
              #{a.sequence} · {a.kind}
            </h2>
            <p className="muted">
              {new Date(a.time * 1000).toLocaleString()} · {a.subject}
            </p>
            <pre className="mono payload">{a.payload}</pre>
            <button type="button" className="secondary" onClick={() => void verify(a.sequence)}>
              Verify
            </button>
            {checks && (
              <div aria-live="polite">
                <p className={valid ? 'ok' : 'error'} data-testid="verdict">
                  <strong>{valid ? 'VALID' : 'NOT VERIFIED'}</strong>
                </p>
                <ul>
                  {checks.map((c) => (
                    <li key={c.name} className={c.ok ? 'ok' : 'error'}>
                      {c.ok ? '✓' : '✗'} {c.name}: {c.detail}
                    </li>
                  ))}
                </ul>
              </div>
            )}
          </article>
        );
      })}
    </>
  );
}
