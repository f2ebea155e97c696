// Starts a real local DeCloud network (`decloud dev`: anvil with the contracts, the indexer, the
// orchestrator serving the built app, one node agent on libvirt's test driver) on free ports, and
// stops it after the tests.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const webDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const repoRoot = join(webDir, '..');

/** The `decloud` binary of this workspace's build (`DECLOUD_BIN` to use another). */
export function decloudBin() {
  const bin = process.env.DECLOUD_BIN ?? join(repoRoot, 'target', 'debug', 'decloud');
  if (!existsSync(bin)) throw new Error(`${bin} does not exist: build it with cargo build -p decloud-cli, or set DECLOUD_BIN`);
  return bin;
}

/** The ABI of a contract from its Foundry artifact (the same source the app's ABIs come from). */
export function abiOf(name) {
  return JSON.parse(readFileSync(join(repoRoot, 'contracts', 'out', `${name}.sol`, `${name}.json`), 'utf8')).abi;
}

/**
 * Runs `decloud dev` until its summary is printed; resolves with what it printed: the endpoints,
 * the deployment record, the funded accounts and the node it registered. `extraArgs` go to
 * `decloud dev` (e.g. a real libvirt URI and guest image).
 */
export async function startNetwork({ timeoutMs = 180_000, extraArgs = [] } = {}) {
  const dist = join(webDir, 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error('web/dist is not built: run npm run build in web/');
  const deployments = mkdtempSync(join(tmpdir(), 'decloud-web-test-'));
  const child = spawn(
    decloudBin(),
    ['dev', '--port', '0', '--indexer-port', '0', '--orchestrator-port', '0', '--ingress-port', '0', '--deployments-dir', deployments, '--web-dir', dist, ...extraArgs],
    { cwd: repoRoot, env: { ...process.env, DECLOUD_ROOT: repoRoot }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.DECLOUD_TEST_LOG) process.stderr.write(d);
  });
  const summary = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`decloud dev did not start within ${timeoutMs} ms:\n${stderr.slice(-4000)}`)), timeoutMs);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('Press Ctrl-C to stop.')) {
        clearTimeout(timer);
        resolve(stdout);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`decloud dev exited with ${code} before it was ready:\n${stderr.slice(-4000)}`));
    });
  });
  const endpoint = (name) => {
    const line = summary.split('\n').find((l) => l.trim().startsWith(name));
    if (!line) throw new Error(`decloud dev printed no ${name} endpoint:\n${summary}`);
    return line.trim().split(/\s+/).pop();
  };
  const accounts = [...summary.matchAll(/^\s*\((\d+)\) (0x[0-9a-fA-F]{40}) (0x[0-9a-fA-F]{64})/gm)].map((m) => ({
    address: m[2],
    privateKey: m[3],
  }));
  const nodeId = summary.match(/node id\s+(0x[0-9a-f]{64})/)?.[1];
  const deployment = JSON.parse(readFileSync(join(deployments, '31337.json'), 'utf8'));
  const network = {
    rpcUrl: endpoint('chain (anvil JSON-RPC)').replace(/\/$/, ''),
    indexerUrl: endpoint('indexer (GraphQL)'),
    apiUrl: endpoint('orchestrator (HTTP API)'),
    appUrl: endpoint('web app').replace(/\/$/, ''),
    accounts,
    nodeId,
    deployment,
    /** Where `decloud dev` wrote networks.toml and the deployment record, for the CLI. */
    deploymentsDir: deployments,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(deployments, { recursive: true, force: true });
    },
  };
  return network;
}
