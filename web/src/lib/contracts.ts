import { useAccount, useReadContract } from 'wagmi';
import { leaseEscrowAbi, usdcAbi } from '../abi/generated';
import { useAppConfig } from './appConfig';

/** The connected account's USDC in its wallet and its free balance in the escrow, in micro-USDC. */
export function useBalances() {
  const config = useAppConfig();
  const { address } = useAccount();
  const enabled = { query: { enabled: !!address } };
  const wallet = useReadContract({
    address: config.contracts.usdc,
    abi: usdcAbi,
    functionName: 'balanceOf',
    args: address ? [address] : undefined,
    ...enabled,
  });
  const escrow = useReadContract({
    address: config.contracts.leaseEscrow,
    abi: leaseEscrowAbi,
    functionName: 'balanceOf',
    args: address ? [address] : undefined,
    ...enabled,
  });
  return { wallet: wallet.data, escrow: escrow.data };
}
