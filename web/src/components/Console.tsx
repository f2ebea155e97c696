import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'react';
import { useAppConfig } from '../lib/appConfig';
import { useSession } from '../lib/session';

type Status = { kind: 'idle' } | { kind: 'connecting' } | { kind: 'open' } | { kind: 'closed'; reason: string };

/**
 * The VM's serial console in an xterm, over the orchestrator's console WebSocket
 * (`/api/v1/vms/{id}/console`). Browsers cannot set headers on a WebSocket, so the session token
 * goes as the `access_token` query parameter. What is typed goes to the guest as raw bytes;
 * what the guest prints comes back as binary messages. The server's close reason (the VM
 * stopped, a newer session took over, the node has no console) is shown in words.
 */
export function Console({ vmId }: { vmId: string }) {
  const config = useAppConfig();
  const { session } = useSession();
  const host = useRef<HTMLDivElement>(null);
  const socket = useRef<WebSocket | null>(null);
  const [status, setStatus] = useState<Status>({ kind: 'idle' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (attempt === 0 || !session || !host.current) return;
    const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 2000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fit.fit();
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);

    const base = new URL(config.apiUrl, window.location.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${base.toString().replace(/\/$/, '')}/vms/${encodeURIComponent(vmId)}/console?access_token=${encodeURIComponent(session.token)}`;
    setStatus({ kind: 'connecting' });
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    socket.current = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      setStatus({ kind: 'open' });
      term.focus();
    };
    ws.onmessage = (event) => {
      term.write(typeof event.data === 'string' ? event.data : new Uint8Array(event.data as ArrayBuffer));
    };
    ws.onclose = (event) => {
      // A refusal before the upgrade (not running, node unreachable) has no reason on the socket:
      // the VM's state above says why.
      const reason = event.reason || (opened ? 'the console session ended' : 'the orchestrator refused the console (is the VM running?)');
      term.write(`\r\n\x1b[2m[console closed: ${reason}]\x1b[0m\r\n`);
      setStatus({ kind: 'closed', reason });
    };
    const encoder = new TextEncoder();
    const typing = term.onData((data) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    return () => {
      typing.dispose();
      window.removeEventListener('resize', onResize);
      ws.onclose = null;
      ws.close();
      socket.current = null;
      term.dispose();
    };
  }, [attempt, config.apiUrl, session, vmId]);

  return (
    <section className="card" aria-labelledby="console-heading">
      <h2 id="console-heading">Serial console</h2>
      <div className="row">
        <button type="button" onClick={() => setAttempt((n) => n + 1)} disabled={!session || status.kind === 'connecting' || status.kind === 'open'}>
          {attempt === 0 ? 'Open console' : 'Reconnect'}
        </button>
        {status.kind === 'open' && (
          <button type="button" className="secondary" onClick={() => socket.current?.close()}>
            Close console
          </button>
        )}
        <span role="status" data-testid="console-status">
          {status.kind === 'connecting' && 'Connecting…'}
          {status.kind === 'open' && 'Connected: type into the console below.'}
          {status.kind === 'closed' && `Closed: ${status.reason}.`}
        </span>
      </div>
      <div ref={host} className="console" data-testid="console" aria-label="Console output" role="region" hidden={attempt === 0} />
    </section>
  );
}
