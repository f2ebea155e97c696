import type { Address } from 'viem';
import type { ReviewSubject } from './api';

/** The EIP-712 types of a review, as the orchestrator verifies them (orchestrator/README.md). */
export const REVIEW_TYPES = {
  Review: [
    { name: 'leaseId', type: 'uint256' },
    { name: 'subject', type: 'uint8' },
    { name: 'rating', type: 'uint8' },
    { name: 'text', type: 'string' },
  ],
} as const;

/** The `subject` field of the typed data: 0 rates the lease's node, 1 the template it deployed. */
export const SUBJECT_CODE: Record<ReviewSubject, number> = { node: 0, template: 1 };

/** A review's text is at most this many bytes of UTF-8. */
export const MAX_REVIEW_BYTES = 2000;

/** The domain reviews are signed in: one per chain and LeaseEscrow. */
export function reviewDomain(chainId: number, escrow: Address) {
  return { name: 'DeCloud Reviews', version: '1', chainId, verifyingContract: escrow } as const;
}

/** A mean in hundredths of a star in words: `4.50 stars from 2 reviews`. */
export function describeRating(rating: { count: number; mean_hundredths?: number | null } | undefined): string {
  if (!rating || rating.count === 0 || rating.mean_hundredths == null) return 'No reviews yet';
  const mean = `${Math.floor(rating.mean_hundredths / 100)}.${String(rating.mean_hundredths % 100).padStart(2, '0')}`;
  return `${mean} stars from ${rating.count} review${rating.count === 1 ? '' : 's'}`;
}

/** The orchestrator's refusals of a review in plain words (its codes: api/reviews.rs). */
export function explainReviewRefusal(code: string, message: string, leaseId: string, subject: ReviewSubject): string {
  const what = subject === 'node' ? 'its node' : 'its template';
  switch (code) {
    case 'already_reviewed':
      return `You have already reviewed ${what} for lease ${leaseId}: each lease gets one review of its node and one of its template.`;
    case 'not_eligible':
      return subject === 'template'
        ? `Lease ${leaseId} deployed no template, or this wallet is not its tenant: only the tenant reviews the template a lease deployed.`
        : `This wallet is not the tenant of lease ${leaseId}: only the tenant who paid for a lease can review it.`;
    case 'not_found':
      return `The orchestrator knows no lease ${leaseId}.`;
    case 'invalid_review':
      return `The review was not accepted: ${message}.`;
    default:
      return message;
  }
}
