import { useQueryClient } from '@tanstack/react-query';
import { useId, useState } from 'react';
import { useAccount, useReadContract, useSignTypedData } from 'wagmi';
import { leaseEscrowAbi } from '../abi/generated';
import { ApiError, apiFetch, type RatingSummary, type ReviewSubject, type ReviewView, type SignedReview } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { formatUnixTime, shortHex } from '../lib/format';
import { useApi } from '../lib/queries';
import { describeRating, explainReviewRefusal, MAX_REVIEW_BYTES, REVIEW_TYPES, reviewDomain, SUBJECT_CODE } from '../lib/reviews';

/** The aggregate of a node's or a template's reviews. */
export function Rating({ rating }: { rating?: RatingSummary }) {
  return <span data-testid="rating">{describeRating(rating)}</span>;
}

/** The reviews of one node or template, newest first, with who signed each. */
export function ReviewList({ node, template }: { node?: string; template?: string }) {
  const query = node ? `node=${encodeURIComponent(node)}` : `template=${encodeURIComponent(template ?? '')}`;
  const reviews = useApi<ReviewView[]>(`/reviews?${query}`);
  const headingId = useId();
  return (
    <section className="card" aria-labelledby={headingId}>
      <h2 id={headingId}>Reviews</h2>
      {reviews.error && <p className="error">{explainError(reviews.error)}</p>}
      {reviews.data?.length === 0 && <p className="muted">No tenant has reviewed it yet.</p>}
      {reviews.data && reviews.data.length > 0 && (
        <ul className="reviews" data-testid="reviews">
          {reviews.data.map((r) => (
            <li key={`${r.lease_id}-${r.subject}`}>
              <strong>
                {r.rating} of 5 stars
              </strong>{' '}
              <span className="muted">
                · lease {r.lease_id} · by <span className="mono">{shortHex(r.reviewer)}</span> · {formatUnixTime(r.created_at)}
              </span>
              {r.text && <p className="review-text">{r.text}</p>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/**
 * The tenant's review of a lease's node (and of its template, when it deployed one): signed by
 * the wallet as EIP-712 typed data, which costs nothing, and posted to the orchestrator, which
 * checks on-chain that the signer is the lease's tenant.
 */
export function ReviewForm({ leaseId }: { leaseId: string }) {
  const config = useAppConfig();
  const queries = useQueryClient();
  const { address } = useAccount();
  const { signTypedDataAsync } = useSignTypedData();
  const id = /^\d+$/.test(leaseId) ? BigInt(leaseId) : undefined;
  const lease = useReadContract({
    address: config.contracts.leaseEscrow,
    abi: leaseEscrowAbi,
    functionName: 'getLease',
    args: id !== undefined ? [id] : undefined,
    query: { enabled: id !== undefined },
  });
  const [subject, setSubject] = useState<ReviewSubject>('node');
  const [rating, setRating] = useState(0);
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const headingId = useId();

  if (id === undefined || !lease.data || !address) return null;
  // Only the tenant's wallet can sign a review the orchestrator accepts: others are not offered it.
  if (lease.data.tenant.toLowerCase() !== address.toLowerCase()) return null;
  const hasTemplate = lease.data.templateId > 0n;

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setDone(null);
    if (!Number.isInteger(rating) || rating < 1 || rating > 5) return setError('Choose from 1 to 5 stars.');
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > MAX_REVIEW_BYTES) return setError(`The text is ${bytes} bytes long; a review holds at most ${MAX_REVIEW_BYTES}.`);
    setBusy(true);
    try {
      const signature = await signTypedDataAsync({
        domain: reviewDomain(config.chainId, config.contracts.leaseEscrow),
        types: REVIEW_TYPES,
        primaryType: 'Review',
        message: { leaseId: id!, subject: SUBJECT_CODE[subject], rating, text },
      });
      const review: SignedReview = {
        lease_id: leaseId,
        subject,
        rating,
        text,
        chain_id: config.chainId,
        escrow: config.contracts.leaseEscrow,
        signature,
        reviewer: address!,
      };
      await apiFetch<ReviewView>(config.apiUrl, '/reviews', { method: 'POST', body: JSON.stringify(review) });
      setDone(`Your review of the ${subject} of lease ${leaseId} is published.`);
      setText('');
      // Listings, templates and review lists carry the new aggregate.
      await queries.invalidateQueries({ queryKey: ['api'] });
    } catch (err) {
      setError(err instanceof ApiError ? explainReviewRefusal(err.code, err.message, leaseId, subject) : explainError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card" aria-labelledby={headingId}>
      <h2 id={headingId}>Review this lease</h2>
      <form onSubmit={(e) => void submit(e)} aria-label={`Review lease ${leaseId}`}>
        <fieldset>
          <legend>What you rate</legend>
          <label className="check">
            <input type="radio" name="review-subject" checked={subject === 'node'} onChange={() => setSubject('node')} />
            <span>Its node ({shortHex(lease.data.nodeId)})</span>
          </label>
          {hasTemplate && (
            <label className="check">
              <input type="radio" name="review-subject" checked={subject === 'template'} onChange={() => setSubject('template')} />
              <span>Its template (#{lease.data.templateId.toString()})</span>
            </label>
          )}
        </fieldset>
        <fieldset>
          <legend>Stars</legend>
          <div className="row">
            {[1, 2, 3, 4, 5].map((n) => (
              <label key={n} className="check">
                <input type="radio" name="review-rating" checked={rating === n} onChange={() => setRating(n)} />
                <span>
                  {n} star{n === 1 ? '' : 's'}
                </span>
              </label>
            ))}
          </div>
        </fieldset>
        <label>
          Your review (optional, at most {MAX_REVIEW_BYTES} bytes)
          <textarea name="review-text" rows={3} value={text} onChange={(e) => setText(e.target.value)} />
        </label>
        <p className="muted">Your wallet signs the review (no transaction, nothing to pay); anyone can verify the signature.</p>
        <button type="submit" disabled={busy}>
          {busy ? 'Waiting for your signature…' : 'Sign and publish review'}
        </button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        {done && <p role="status">{done}</p>}
      </form>
    </section>
  );
}
