import { formatUnits, parseUnits } from 'viem';

/** USDC has 6 decimals: amounts on-chain are micro-USDC. */
export const USDC_DECIMALS = 6;

export function formatUsdc(micro: bigint | number | string): string {
  const value = BigInt(micro);
  const [whole, fraction = ''] = formatUnits(value, USDC_DECIMALS).split('.');
  return `${BigInt(whole).toLocaleString('en-US')}.${fraction.padEnd(2, '0')} USDC`;
}

/**
 * Parses a decimal USDC amount exactly ("12.5", "0.000001"); returns an error in words for
 * anything else: a sign, letters, more than 6 decimals, zero.
 */
export function parseUsdc(text: string): { micro: bigint } | { error: string } {
  const trimmed = text.trim();
  if (!trimmed) return { error: 'Enter an amount.' };
  if (!/^\d+(\.\d+)?$/.test(trimmed)) return { error: 'Enter a plain decimal amount, like 12.5.' };
  const decimals = trimmed.split('.')[1]?.length ?? 0;
  if (decimals > USDC_DECIMALS) return { error: 'USDC has at most 6 decimals.' };
  const micro = parseUnits(trimmed, USDC_DECIMALS);
  if (micro === 0n) return { error: 'The amount must be more than zero.' };
  if (micro >= 2n ** 64n) return { error: 'That amount is too large.' };
  return { micro };
}

export function shortHex(value: string, keep = 6): string {
  return value.length > keep * 2 + 2 ? `${value.slice(0, keep + 2)}…${value.slice(-keep)}` : value;
}

/** A duration in words, rounded down to the largest two units ("3 days 4 hours"). */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return 'none';
  const units: [string, number][] = [
    ['day', 86_400],
    ['hour', 3_600],
    ['minute', 60],
    ['second', 1],
  ];
  const parts: string[] = [];
  let rest = Math.floor(seconds);
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(`${n} ${name}${n === 1 ? '' : 's'}`);
      rest -= n * size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

/** A unix time in seconds as `2026-12-04 02:40:12 UTC`: the same for every reader. */
export function formatUnixTime(seconds: number): string {
  return `${new Date(seconds * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** A byte count in binary units, one decimal above KiB ("1.5 MiB", "512 B"). */
export function formatBytes(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
