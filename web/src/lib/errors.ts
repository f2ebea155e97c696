import { BaseError, ContractFunctionRevertedError, UserRejectedRequestError } from 'viem';
import { formatUsdc } from './format';

type Args = readonly unknown[] | undefined;
const usdc = (v: unknown) => formatUsdc(BigInt(v as bigint));

/**
 * The system's custom errors in words. Names not listed here still show as their name and
 * arguments, decoded from the generated ABIs: never as raw revert data.
 */
const WORDS: Record<string, (args: Args) => string> = {
  InsufficientBalance: (a) =>
    `Your escrow balance is too low: this needs ${usdc(a?.[0])} but ${usdc(a?.[1])} is available. Deposit more first.`,
  ERC20InsufficientBalance: (a) => `Your wallet holds ${usdc(a?.[1])} USDC, less than the ${usdc(a?.[2])} needed.`,
  ERC20InsufficientAllowance: (a) => `The contract may spend only ${usdc(a?.[1])} of your USDC, less than ${usdc(a?.[2])}. Approve more first.`,
  ERC2612ExpiredSignature: () => 'The permit signature expired. Try again.',
  ERC2612InvalidSigner: () => 'The permit was signed by another account than the one sending the deposit.',
  ZeroAmount: () => 'The amount must be more than zero.',
  NodeNotActive: () => 'This node is not accepting leases (paused or retired).',
  InvalidResources: () => 'These resources are not valid for a lease: at least 1 vCPU, 1 GiB of memory and 1 GiB of storage.',
  LeaseNotFound: (a) => `Lease ${String(a?.[0])} does not exist.`,
  NotLeaseTenant: (a) => `Only the tenant of lease ${String(a?.[0])} can do this.`,
  LeaseNotActive: (a) => `Lease ${String(a?.[0])} is no longer active.`,
  RateAboveMax: (a) =>
    `The node's price went up: the lease would cost ${usdc(a?.[0])} per hour, above the ${usdc(a?.[1])} you were quoted. Review the new price.`,
  InsufficientCapacity: () => 'This node has no room left for these resources: choose a smaller VM or another node.',
  LeaseAccrualEnded: (a) => `Lease ${String(a?.[0])} stopped accruing: its node no longer serves it.`,
  PriceAboveMax: (a) => `The template's price went up to ${usdc(a?.[0])}, above the ${usdc(a?.[1])} you accepted.`,
  TemplateIsDeprecated: (a) => `Template ${String(a?.[0])} is deprecated and can no longer be deployed.`,
  TemplateNotFound: (a) => `Template ${String(a?.[0])} does not exist.`,
  NotNodeOperator: () => 'Only the operator of this node can change it.',
  NodeAlreadyRegistered: () => 'This node is registered already.',
  NodeIsRetired: () => 'This node is retired: it can no longer change.',
  NodeNotFound: () => 'No node has this id.',
  InvalidPrices: () => 'These prices are not valid.',
  InvalidStatusTransition: () => 'The node cannot move to that state from its current one.',
  ZeroNodeKey: () => 'The node key must not be empty.',
  InsufficientStake: (a) => `You have ${usdc(a?.[1])} staked, less than the ${usdc(a?.[0])} requested.`,
  StillUnbonding: (a) => `This stake is still unbonding until ${new Date(Number(a?.[1]) * 1000).toLocaleString()}.`,
  NothingToWithdraw: () => 'There is nothing to withdraw.',
  NotTemplateAuthor: () => 'Only the author of this template can change it.',
  EnforcedPause: () => 'This contract is paused by governance: deposits, new leases and top-ups wait until it resumes.',
  EmptyCid: () => 'The content id must not be empty.',
};

/** The reason a call reverted or failed, in words. */
export function explainError(e: unknown): string {
  if (e instanceof BaseError) {
    if (e.walk((x) => x instanceof UserRejectedRequestError)) return 'You declined the request in your wallet. Nothing was sent.';
    const revert = e.walk((x) => x instanceof ContractFunctionRevertedError);
    if (revert instanceof ContractFunctionRevertedError) {
      const name = revert.data?.errorName;
      if (name) {
        const words = WORDS[name];
        if (words) return words(revert.data?.args);
        const args = (revert.data?.args ?? []).map((a) => String(a)).join(', ');
        return `The contract refused: ${name}(${args}).`;
      }
      if (revert.reason) return `The contract refused: ${revert.reason}.`;
      return 'The contract refused this transaction without saying why.';
    }
    return e.shortMessage;
  }
  const code = (e as { code?: number })?.code;
  if (code === 4001) return 'You declined the request in your wallet. Nothing was sent.';
  return e instanceof Error ? e.message : String(e);
}
