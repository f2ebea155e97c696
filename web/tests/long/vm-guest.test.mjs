// The VM page against a real QEMU guest (slow, so not in `npm test`): `decloud dev` with its node
// agent on libvirt's system connection booting the guest image at DECLOUD_GUEST_IMAGE (a
// `scripts/guest-image` directory). The tenant sets an SSH key and the sealing key in the app,
// opens a lease from the deploy page, then logs in with the exact `ssh` line the VM page shows,
// by key and by the password the page opened with the wallet, and sees the guest's own output in
// the browser's serial console.
//
//   DECLOUD_GUEST_IMAGE=$(../scripts/guest-image) npm run test:long     (from web/, as root)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { confirmTx, connectWallet, signIn } from '../support/app.mjs';
import { launchBrowser } from '../support/browser.mjs';
import { api, chainReader, eventually } from '../support/chain.mjs';
import { startNetwork } from '../support/network.mjs';
import { installWallet } from '../support/wallet.mjs';

const run = promisify(execFile);
const USDC = 1_000_000n;
const image = process.env.DECLOUD_GUEST_IMAGE;
// cloud-init's first boot under software emulation on a busy 2-core machine.
const BOOT_MS = 900_000;

describe('VM page on a real guest', { skip: image ? false : 'set DECLOUD_GUEST_IMAGE to a scripts/guest-image directory' }, () => {
  let network;
  let browser;
  let page;
  let chain;
  let tenant;
  let token;
  let vmId;
  let temp;
  let key;
  let sshLine;

  /** Runs the page's `ssh` line with extra options before the destination; resolves with stdout or null. */
  async function ssh(options, command, env = {}) {
    const [, ...args] = sshLine.split(/\s+/);
    const destination = args.pop();
    try {
      const { stdout } = await run(
        'ssh',
        ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', ...options, ...args, destination, command],
        { env: { ...process.env, ...env }, timeout: 60_000 },
      );
      return stdout.trim();
    } catch {
      return null;
    }
  }

  before(async () => {
    temp = mkdtempSync(join(tmpdir(), 'decloud-web-guest-'));
    key = join(temp, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@web-test', '-f', key]);
    network = await startNetwork({ extraArgs: ['--agent-libvirt-uri', 'qemu:///system', '--agent-image', image] });
    chain = chainReader(network);
    tenant = network.accounts[3];
    await chain.usdcAs(tenant.privateKey, 'approve', [network.deployment.contracts.leaseEscrow.address, 10n * USDC]);
    await chain.escrowAs(tenant.privateKey, 'deposit', [10n * USDC]);
    browser = await launchBrowser();
    page = await browser.newPage();
    await installWallet(page, { privateKey: tenant.privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
    await connectWallet(page, network.appUrl);
    token = await signIn(page);
  });

  after(async () => {
    // Closing the lease deletes the guest; the network's stop ends the agent.
    if (vmId && (await chain.lease(1)).status === 1) await chain.escrowAs(tenant.privateKey, 'closeLease', [1n]).catch(() => {});
    await browser?.close();
    await network?.stop();
    if (temp) rmSync(temp, { recursive: true, force: true });
  });

  test('the profile gets an SSH key and the sealing key; a lease is opened from the deploy page', async () => {
    const profile = page.getByTestId('profile');
    await profile.getByLabel(/^SSH public keys/).fill(readFileSync(`${key}.pub`, 'utf8'));
    await profile.getByRole('button', { name: 'Save keys and ports' }).click();
    await profile.getByRole('status').filter({ hasText: 'Profile saved' }).waitFor();
    await profile.getByRole('button', { name: 'Derive a sealing key from this wallet' }).click();
    await profile.getByRole('status').filter({ hasText: 'Sealing key saved' }).waitFor();
    await page.getByRole('link', { name: 'Deploy' }).click();
    await page.getByLabel('Node').selectOption(network.nodeId);
    await page.getByLabel('Storage (GiB)').fill('4');
    await page.getByLabel('Funding (USDC)').fill('5');
    await page.getByLabel(/^Burstable/).check();
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    const refused = page.getByRole('alert');
    await Promise.race([page.getByLabel('Transaction review').waitFor(), refused.first().waitFor()]);
    assert.equal(await refused.count(), 0, `the lease was refused: ${await refused.allInnerTexts()}`);
    await confirmTx(page, 'Open a lease');
    const vm = await eventually(
      'the VM runs with port 22 forwarded',
      async () => {
        const found = (await api(network, '/vms', token)).body?.find((v) => String(v.lease_id) === '1');
        assert.notEqual(found?.state, 'failed', JSON.stringify(found));
        if (found?.state !== 'running') return null;
        const detail = (await api(network, `/vms/${found.vm_id}`, token)).body;
        return detail.access?.ssh_command ? detail : null;
      },
      BOOT_MS,
    );
    vmId = vm.vm_id;
  });

  test('logs in with the key through the ssh line the VM page shows', async () => {
    await page.goto(`${network.appUrl}/vms/${vmId}`);
    sshLine = await page.getByTestId('ssh-command').innerText();
    const detail = (await api(network, `/vms/${vmId}`, token)).body;
    assert.equal(sshLine, detail.access.ssh_command);
    const forward = detail.access.forwards.find((f) => f.guest === 22);
    assert.equal(sshLine, `ssh -p ${forward.public} ${detail.access.login_user}@${detail.access.public_address}`);
    const answer = await eventually(
      'SSH answers with the key',
      () => ssh(['-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-i', key], 'echo in-as-$(id -un)'),
      BOOT_MS,
    );
    assert.equal(answer, `in-as-${detail.access.login_user}`);
  });

  test('logs in with the password opened in the browser; a wrong one is refused', async () => {
    await page.getByRole('button', { name: 'Show password' }).click();
    const password = await page.getByTestId('credentials-password').innerText();
    const askpass = (name, text) => {
      const path = join(temp, name);
      writeFileSync(path, `#!/bin/sh\necho '${text}'\n`);
      chmodSync(path, 0o700);
      return { SSH_ASKPASS: path, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0' };
    };
    const byPassword = ['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password,keyboard-interactive'];
    assert.equal(await ssh(byPassword, 'echo by-password', askpass('askpass', password)), 'by-password');
    assert.equal(await ssh(byPassword, 'true', askpass('wrong', 'not-the-password')), null);
  });

  test("the browser's serial console shows the guest's own output and takes typing", async () => {
    await page.getByRole('button', { name: 'Open console' }).click();
    await page.getByTestId('console-status').getByText(/^Connected/).waitFor();
    const screen = page.locator('[data-testid="console"] .xterm-rows');
    // Enter at the guest's getty prints a fresh login prompt.
    await page.locator('[data-testid="console"] .xterm').click();
    await page.keyboard.press('Enter');
    await eventually('the guest prints a login prompt', async () => /login:/.test(await screen.innerText()), 120_000);
  });
});
