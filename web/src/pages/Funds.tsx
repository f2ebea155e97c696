import { useState } from 'react';
import type { Abi } from 'viem';
import { useAccount, usePublicClient, useSignTypedData } from 'wagmi';
import { leaseEscrowAbi, usdcAbi } from '../abi/generated';
import { useAppConfig } from '../lib/appConfig';
import { useBalances } from '../lib/contracts';
import { explainError } from '../lib/errors';
import { formatUsdc, parseUsdc } from '../lib/format';
import { cannotSignPermits, signPermit } from '../lib/permit';
import { TxPanel, useTx } from '../lib/tx';

export function FundsPage() {
  const { isConnected } = useAccount();
  const { wallet, escrow } = useBalances();
  return (
    <>
      <h1>Funds</h1>
      <p>
        Leases are paid from your balance in the DeCloud escrow contract. Deposit USDC from your wallet; what no lease holds can be
        withdrawn at any time, even while the contract is paused.
      </p>
      {!isConnected ? (
        <p className="muted">Connect a wallet to see your balances.</p>
      ) : (
        <>
          <dl className="figures">
            <div>
              <dt>In your wallet</dt>
              <dd data-testid="wallet-usdc">{wallet === undefined ? '…' : formatUsdc(wallet)}</dd>
            </div>
            <div>
              <dt>In the escrow (free)</dt>
              <dd data-testid="escrow-balance">{escrow === undefined ? '…' : formatUsdc(escrow)}</dd>
            </div>
          </dl>
          <div className="grid2">
            <DepositForm />
            <WithdrawForm />
          </div>
        </>
      )}
    </>
  );
}

/**
 * Deposit with an EIP-2612 permit (one signature, one transaction), or approve then deposit for
 * wallets or tokens without permits.
 */
function DepositForm() {
  const config = useAppConfig();
  const client = usePublicClient();
  const { address } = useAccount();
  const { signTypedDataAsync } = useSignTypedData();
  const [amount, setAmount] = useState('');
  const [useApprove, setUseApprove] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const [approved, setApproved] = useState<bigint | null>(null);
  const escrowCall = (micro: bigint) => ({
    label: `Deposit ${formatUsdc(micro)}`,
    address: config.contracts.leaseEscrow,
    abi: leaseEscrowAbi as Abi,
    functionName: 'deposit',
    args: [micro],
  });
  const tx = useTx(() => {
    // After an approval, the deposit itself is reviewed and sent next.
    if (approved !== null) {
      const micro = approved;
      setApproved(null);
      void tx.prepare(escrowCall(micro));
    } else {
      setAmount('');
    }
  });

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    const parsed = parseUsdc(amount);
    if ('error' in parsed) {
      setMessage(parsed.error);
      return;
    }
    if (!address || !client) return;
    const micro = parsed.micro;
    if (useApprove) {
      setApproved(micro);
      await tx.prepare({
        label: `Allow the escrow to take ${formatUsdc(micro)}`,
        address: config.contracts.usdc,
        abi: usdcAbi as Abi,
        functionName: 'approve',
        args: [config.contracts.leaseEscrow, micro],
      });
      return;
    }
    try {
      const permit = await signPermit(client, signTypedDataAsync as never, {
        token: config.contracts.usdc,
        owner: address,
        spender: config.contracts.leaseEscrow,
        value: micro,
        chainId: config.chainId,
      });
      await tx.prepare({
        label: `Deposit ${formatUsdc(micro)}`,
        address: config.contracts.leaseEscrow,
        abi: leaseEscrowAbi as Abi,
        functionName: 'depositWithPermit',
        args: [micro, permit.deadline, permit.v, permit.r, permit.s],
      });
    } catch (err) {
      if (cannotSignPermits(err)) {
        setUseApprove(true);
        setMessage('Your wallet cannot sign permits: choose “Approve, then deposit” (two transactions).');
      } else {
        setMessage(explainError(err));
      }
    }
  }

  return (
    <form className="card" onSubmit={(e) => void submit(e)} aria-labelledby="deposit-heading">
      <h2 id="deposit-heading">Deposit</h2>
      <label>
        Amount (USDC)
        <input name="deposit-amount" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} placeholder="20" />
      </label>
      <label className="check">
        <input type="checkbox" checked={useApprove} onChange={(e) => setUseApprove(e.target.checked)} />
        Approve, then deposit (two transactions, for wallets without permits)
      </label>
      <button type="submit" disabled={tx.phase === 'simulating' || tx.phase === 'sending'}>
        Review deposit
      </button>
      {message && (
        <p className="error" role="alert">
          {message}
        </p>
      )}
      <TxPanel tx={tx} />
    </form>
  );
}

function WithdrawForm() {
  const config = useAppConfig();
  const [amount, setAmount] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  const tx = useTx(() => setAmount(''));
  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    const parsed = parseUsdc(amount);
    if ('error' in parsed) {
      setMessage(parsed.error);
      return;
    }
    await tx.prepare({
      label: `Withdraw ${formatUsdc(parsed.micro)}`,
      address: config.contracts.leaseEscrow,
      abi: leaseEscrowAbi as Abi,
      functionName: 'withdraw',
      args: [parsed.micro],
    });
  }
  return (
    <form className="card" onSubmit={(e) => void submit(e)} aria-labelledby="withdraw-heading">
      <h2 id="withdraw-heading">Withdraw</h2>
      <label>
        Amount (USDC)
        <input name="withdraw-amount" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} placeholder="5" />
      </label>
      <button type="submit" disabled={tx.phase === 'simulating' || tx.phase === 'sending'}>
        Review withdrawal
      </button>
      {message && (
        <p className="error" role="alert">
          {message}
        </p>
      )}
      <TxPanel tx={tx} />
    </form>
  );
}
