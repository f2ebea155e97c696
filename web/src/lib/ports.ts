import type { PortSpec } from './api';

/**
 * Parses port requests as the CLI's `--port` takes them, separated by spaces or commas:
 * `8080/tcp`, `53/udp`, `443/tcp+udp` (both), or a bare port for TCP. Returns the ports or the
 * first problem in words; the orchestrator checks them again.
 */
export function parsePorts(text: string): { ports: PortSpec[] } | { error: string } {
  const ports: PortSpec[] = [];
  for (const item of text.split(/[\s,]+/).filter(Boolean)) {
    const [port, protocol = 'tcp'] = item.split('/', 2);
    const guest = /^\d+$/.test(port) ? Number(port) : NaN;
    if (!(guest >= 1 && guest <= 65535)) return { error: `Port “${port}” is not a number from 1 to 65535.` };
    const protocols =
      protocol === 'tcp' ? (['tcp'] as const) : protocol === 'udp' ? (['udp'] as const) : protocol === 'tcp+udp' || protocol === 'udp+tcp' ? (['tcp', 'udp'] as const) : null;
    if (!protocols) return { error: `Protocol “${protocol}” is not tcp, udp or tcp+udp.` };
    for (const p of protocols) {
      if (ports.some((x) => x.guest === guest && x.protocol === p)) return { error: `Port ${guest}/${p} is listed twice.` };
      ports.push({ guest, protocol: p });
    }
  }
  return { ports };
}

export function formatPorts(ports: PortSpec[]): string {
  return ports.map((p) => `${p.guest}/${p.protocol}`).join(' ');
}
