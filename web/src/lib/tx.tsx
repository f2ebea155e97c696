import { useQueryClient } from '@tanstack/react-query';
import { useCallback, useState } from 'react';
import { type Abi, type Address, formatEther, type TransactionReceipt } from 'viem';
import { useAccount, usePublicClient, useWalletClient } from 'wagmi';
import { systemErrorsAbi } from '../abi/generated';
import { explainError } from './errors';
import { useToasts } from './toasts';

/** A contract call the user is about to sign. */
export interface ContractCall {
  /** What it does, in words ("Deposit 20.00 USDC"). */
  label: string;
  address: Address;
  abi: Abi;
  functionName: string;
  args: readonly unknown[];
}

interface Review {
  call: ContractCall;
  gas: bigint;
  maxFeePerGas: bigint;
}

export type TxPhase = 'idle' | 'simulating' | 'review' | 'sending' | 'confirmed';

export interface Tx {
  phase: TxPhase;
  review: Review | null;
  /** Why the last simulation or transaction failed, in words. */
  error: string | null;
  /** Simulates the call; on success it waits for the user's confirmation, on a revert nothing is sent. */
  prepare: (call: ContractCall) => Promise<boolean>;
  /** Sends the reviewed call from the wallet and waits for its receipt. */
  confirm: () => Promise<TransactionReceipt | null>;
  cancel: () => void;
}

/**
 * Every transaction goes through here: simulated against the chain first (a revert is decoded into
 * words and nothing is sent), its gas and fee estimated and shown, then sent from the user's own
 * wallet, with a pending toast replaced by a confirmed (or failed) one.
 */
export function useTx(onConfirmed?: (receipt: TransactionReceipt) => void): Tx {
  const client = usePublicClient();
  const { data: wallet } = useWalletClient();
  const { address } = useAccount();
  const toasts = useToasts();
  const queries = useQueryClient();
  const [phase, setPhase] = useState<TxPhase>('idle');
  const [review, setReview] = useState<Review | null>(null);
  const [error, setError] = useState<string | null>(null);

  const prepare = useCallback(
    async (call: ContractCall) => {
      setError(null);
      setReview(null);
      if (!client || !address) {
        setError('Connect a wallet first.');
        return false;
      }
      setPhase('simulating');
      // The system's errors join the contract's own, so a revert from a contract it calls decodes too.
      const abi = [...call.abi, ...systemErrorsAbi] as Abi;
      try {
        await client.simulateContract({ address: call.address, abi, functionName: call.functionName, args: call.args, account: address });
        const [gas, fees] = await Promise.all([
          client.estimateContractGas({ address: call.address, abi, functionName: call.functionName, args: call.args, account: address }),
          client.estimateFeesPerGas(),
        ]);
        setReview({ call, gas, maxFeePerGas: fees.maxFeePerGas ?? fees.gasPrice ?? 0n });
        setPhase('review');
        return true;
      } catch (e) {
        setError(explainError(e));
        setPhase('idle');
        return false;
      }
    },
    [client, address],
  );

  const confirm = useCallback(async () => {
    if (!review || !wallet || !client || !address) return null;
    setPhase('sending');
    setError(null);
    const { call, gas } = review;
    const abi = [...call.abi, ...systemErrorsAbi] as Abi;
    let toast: number | undefined;
    // The chain may have moved since the review (a price, a balance): simulate once more, so a
    // transaction that would now revert is explained and never sent.
    try {
      await client.simulateContract({ address: call.address, abi, functionName: call.functionName, args: call.args, account: address });
    } catch (e) {
      const words = explainError(e);
      setError(`Not sent: ${words}`);
      setReview(null);
      setPhase('idle');
      return null;
    }
    try {
      const hash = await wallet.writeContract({
        address: call.address,
        abi,
        functionName: call.functionName,
        args: call.args,
        account: address,
        chain: wallet.chain,
        // Room above the estimate: state can move between the estimate and the block.
        gas: (gas * 12n) / 10n,
      } as never);
      toast = toasts.show('pending', `${call.label}: pending…`);
      const receipt = await client.waitForTransactionReceipt({ hash });
      if (receipt.status !== 'success') throw new Error(`${call.label} reverted on-chain (transaction ${hash}).`);
      toasts.show('success', `${call.label}: confirmed in block ${receipt.blockNumber}.`, toast);
      setPhase('confirmed');
      setReview(null);
      await queries.invalidateQueries();
      onConfirmed?.(receipt);
      return receipt;
    } catch (e) {
      const words = explainError(e);
      setError(words);
      toasts.show('error', `${call.label} failed: ${words}`, toast);
      setPhase('review');
      return null;
    }
  }, [review, wallet, client, address, toasts, queries, onConfirmed]);

  const cancel = useCallback(() => {
    setReview(null);
    setError(null);
    setPhase('idle');
  }, []);

  return { phase, review, error, prepare, confirm, cancel };
}

/** The review of a prepared transaction: what it does, what it may cost, confirm or cancel. */
export function TxPanel({ tx, nativeSymbol = 'ETH' }: { tx: Tx; nativeSymbol?: string }) {
  if (tx.phase === 'simulating') return <p className="muted">Checking the transaction against the chain…</p>;
  return (
    <>
      {tx.error && (
        <p className="error" role="alert">
          {tx.error}
        </p>
      )}
      {tx.review && (tx.phase === 'review' || tx.phase === 'sending') && (
        <div className="review" aria-label="Transaction review">
          <p>
            <strong>{tx.review.call.label}</strong>
          </p>
          <p className="muted">
            Simulated successfully. Network fee at most {formatEther(tx.review.gas * tx.review.maxFeePerGas)} {nativeSymbol} (
            {tx.review.gas.toString()} gas).
          </p>
          <div className="row">
            <button type="button" onClick={() => void tx.confirm()} disabled={tx.phase === 'sending'}>
              {tx.phase === 'sending' ? 'Waiting for confirmation…' : 'Confirm in wallet'}
            </button>
            <button type="button" className="secondary" onClick={tx.cancel} disabled={tx.phase === 'sending'}>
              Cancel
            </button>
          </div>
        </div>
      )}
    </>
  );
}
