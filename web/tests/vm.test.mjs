// The tenant's VM page in real Chromium against a real local network: the access profile (SSH
// keys, ports, the sealing key derived from the wallet, checked against the Rust CLI's derivation
// of the same wallet), a lease opened with them, how to connect, the password opened in the
// browser (the same as the CLI opens), the serial console in xterm, stop/start/reboot, and the
// lease closed from the VM page with the exact refund. After each step the orchestrator and the
// chain are read directly.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { checkPage, confirmTx, connectWallet, signIn } from './support/app.mjs';
import { launchBrowser } from './support/browser.mjs';
import { api, chainReader, eventually } from './support/chain.mjs';
import { decloudBin, repoRoot, startNetwork } from './support/network.mjs';
import { installWallet } from './support/wallet.mjs';

const run = promisify(execFile);
const USDC = 1_000_000n;
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop';

describe('VM page: access, password, console, controls', () => {
  let network;
  let browser;
  let page;
  let chain;
  let tenant;
  let token;
  let vmId;
  let templateVmId;
  let cliHome;

  /** Runs the `decloud` CLI as the tenant against this network; returns its parsed JSON output. */
  async function cli(...args) {
    const { stdout } = await run(decloudBin(), [...args, '--json'], {
      cwd: repoRoot,
      env: {
        ...process.env,
        XDG_CONFIG_HOME: cliHome,
        DECLOUD_PRIVATE_KEY: tenant.privateKey,
        DECLOUD_ORCHESTRATOR: network.apiUrl.replace(/\/api\/v1\/?$/, ''),
        DECLOUD_RPC_URL: network.rpcUrl,
        DECLOUD_DEPLOYMENTS_DIR: network.deploymentsDir,
      },
    });
    return JSON.parse(stdout);
  }

  before(async () => {
    network = await startNetwork();
    chain = chainReader(network);
    tenant = network.accounts[3];
    cliHome = mkdtempSync(join(tmpdir(), 'decloud-web-cli-'));
    // Funds for the lease, set up from outside the app (the tenant journey tests deposits).
    await chain.usdcAs(tenant.privateKey, 'approve', [network.deployment.contracts.leaseEscrow.address, 10n * USDC]);
    await chain.escrowAs(tenant.privateKey, 'deposit', [10n * USDC]);
    browser = await launchBrowser();
    page = await browser.newPage();
    await installWallet(page, { privateKey: tenant.privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
    await connectWallet(page, network.appUrl);
    token = await signIn(page);
  });

  after(async () => {
    await browser?.close();
    await network?.stop();
    if (cliHome) rmSync(cliHome, { recursive: true, force: true });
  });

  test('a malformed SSH key or port is refused in words and the profile stays as it was', async () => {
    const profile = page.getByTestId('profile');
    await profile.getByLabel(/^SSH public keys/).fill('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5');
    await profile.getByRole('button', { name: 'Save keys and ports' }).click();
    await profile.getByRole('alert').filter({ hasText: 'ssh key 1' }).waitFor();
    await profile.getByLabel(/^SSH public keys/).fill(ED25519);
    await profile.getByLabel(/^Extra ports/).fill('8080/sctp');
    await profile.getByRole('button', { name: 'Save keys and ports' }).click();
    await profile.getByRole('alert').filter({ hasText: 'Protocol “sctp” is not tcp, udp or tcp+udp.' }).waitFor();
    const stored = await api(network, '/profile', token);
    assert.equal(stored.status, 200);
    assert.deepEqual(stored.body.ssh_keys, []);
    assert.deepEqual(stored.body.ports, []);
  });

  test('saves an SSH key and a port for new VMs', async () => {
    const profile = page.getByTestId('profile');
    await profile.getByLabel(/^SSH public keys/).fill(`  ${ED25519}  `);
    await profile.getByLabel(/^Extra ports/).fill('8080/tcp 53/udp');
    await profile.getByRole('button', { name: 'Save keys and ports' }).click();
    await profile.getByRole('status').filter({ hasText: 'Profile saved' }).waitFor();
    const stored = (await api(network, '/profile', token)).body;
    assert.deepEqual(stored.ssh_keys, [ED25519]);
    assert.deepEqual(stored.ports, [
      { guest: 8080, protocol: 'tcp' },
      { guest: 53, protocol: 'udp' },
    ]);
  });

  test('derives the sealing key in the browser, byte for byte the key the Rust SDK derives', async () => {
    const profile = page.getByTestId('profile');
    await profile.getByRole('button', { name: 'Derive a sealing key from this wallet' }).click();
    await profile.getByRole('status').filter({ hasText: 'Sealing key saved' }).waitFor();
    const web = (await api(network, '/profile', token)).body.sealing_key;
    assert.match(web, /^0x[0-9a-f]{64}$/);
    assert.equal(await profile.getByTestId('sealing-key').innerText(), web);
    await profile.getByText('derived by this wallet').waitFor();
    // The CLI derives the key of the same wallet with the SDK and registers it: the same bytes.
    await cli('login');
    const rust = await cli('profile', 'sealing-key');
    assert.equal(rust.sealing_key, web);
    assert.deepEqual(rust.ssh_keys, [ED25519], 'the key change kept the SSH keys');
  });

  test('opens a lease from the deploy page, which shows the profile it is created with', async () => {
    await page.getByRole('link', { name: 'Deploy' }).click();
    const keys = page.getByTestId('profile').getByLabel(/^SSH public keys/);
    await eventually('the deploy page shows the stored SSH key', async () => (await keys.inputValue()) === ED25519);
    await page.getByLabel('Node').selectOption(network.nodeId);
    await page.getByLabel('Funding (USDC)').fill('5');
    await page.getByLabel(/^Burstable/).check();
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    await confirmTx(page, 'Open a lease');
    await page.getByRole('heading', { level: 1, name: 'Lease 1' }).waitFor();
    assert.equal((await chain.lease(1)).tenant, tenant.address);
    const vm = await eventually('the VM runs', async () => {
      const vms = await api(network, '/vms', token);
      const found = vms.body?.find((v) => String(v.lease_id) === '1');
      assert.notEqual(found?.state, 'failed', `the VM failed: ${JSON.stringify(found)}`);
      return found?.state === 'running' && found;
    }, 60_000);
    vmId = vm.vm_id;
  });

  test('the VM page shows how to connect, as the orchestrator reports it', async () => {
    await page.goto(`${network.appUrl}/vms/${vmId}`);
    await page.getByTestId('vm-state').getByText('running').waitFor();
    const detail = (await api(network, `/vms/${vmId}`, token)).body;
    assert.deepEqual(
      detail.access.ports.map((p) => `${p.guest}/${p.protocol}`).sort(),
      ['22/tcp', '53/udp', '8080/tcp'],
      'the VM was created with the profile’s ports',
    );
    assert.equal(detail.access.has_credentials, true, 'a password was sealed to the registered key');
    if (detail.access.ssh_command) {
      assert.match(detail.access.ssh_command, /^ssh -p \d+ decloud@\S+$/);
      assert.equal(await page.getByTestId('ssh-command').innerText(), detail.access.ssh_command);
      const rows = await page.getByTestId('forwards').locator('tbody tr').count();
      assert.equal(rows, detail.access.forwards.length);
    } else {
      await page.getByText('No SSH port is forwarded yet').waitFor();
    }
    assert.equal(await page.getByTestId('public-address').innerText(), detail.access.public_address ?? '—');
  });

  test('names a port of the VM in the page, refuses a bad name with nothing changed, and frees it', async () => {
    const info = (await api(network, '/ingress')).body;
    assert.match(info.domain, /\.localhost$/, 'decloud dev names HTTP ports under a .localhost domain');
    const form = page.getByRole('form', { name: 'Serve a port by name' });
    const urls = async () => (await api(network, `/vms/${vmId}`, token)).body.access.urls.map((u) => u.url);

    await form.getByLabel('Guest port').fill('8080');
    await form.getByLabel('Name (optional)').fill('webpage-test');
    await form.getByRole('button', { name: 'Serve by name' }).click();
    const url = `https://webpage-test.${info.domain}:${info.https_port}`;
    const link = page.getByTestId('urls').getByRole('link', { name: url });
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), url);
    assert.deepEqual(await urls(), [url], 'the orchestrator serves the name the page showed');

    // A name that is no DNS label: the orchestrator's reason in words, and the name stays.
    await form.getByLabel('Guest port').fill('8080');
    await form.getByLabel('Name (optional)').fill('not_a_label');
    await form.getByRole('button', { name: 'Serve by name' }).click();
    const refusal = await page.getByTestId('web-name-error').innerText();
    assert.match(refusal, /"not_a_label" may hold only a-z, 0-9 and -/, refusal);
    assert.deepEqual(await urls(), [url], 'a refused name changed nothing');
    await link.waitFor();

    // Freed: no longer served, and the name is free for anyone again.
    await page.getByRole('button', { name: 'Stop serving port 8080 at webpage-test' }).click();
    await eventually('the web address to go', async () => (await page.getByTestId('urls').count()) === 0);
    assert.deepEqual(await urls(), []);
    assert.equal((await api(network, '/ingress/names/webpage-test')).status, 200, 'the name is free again');
  });

  test('opens the password in the browser with the wallet: the same the CLI opens', async () => {
    await page.getByRole('button', { name: 'Show password' }).click();
    const password = await page.getByTestId('credentials-password').innerText();
    const user = await page.getByTestId('credentials-user').innerText();
    const opened = await cli('vm', 'credentials', vmId);
    assert.equal(user, opened.user);
    assert.equal(password, opened.password);
    assert.ok(password.length >= 16);
    // Nothing secret came from the server in the clear.
    const sealed = (await api(network, `/vms/${vmId}/credentials`, token)).body;
    assert.ok(!sealed.sealed.includes(password));
  });

  test('the serial console connects in xterm over the console WebSocket', async () => {
    await page.getByRole('button', { name: 'Open console' }).click();
    await page.locator('[data-testid="console"] .xterm').waitFor();
    // The node agent's test driver boots nothing: the session opens, and the agent closes it
    // with its reason (there is no guest serial port), which the page shows in words.
    await eventually('the console session opened and ended with a reason', async () => {
      const status = await page.getByTestId('console-status').innerText();
      return /^(Connected|Closed: )/.test(status) && status;
    });
    const status = await page.getByTestId('console-status').innerText();
    assert.doesNotMatch(status, /refused the console/, 'the upgrade was accepted');
  });

  test('stops, starts and reboots the VM through the orchestrator', async () => {
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.getByText(/^Stop: the VM is \w+\.$/).waitFor();
    await eventually('the orchestrator has it stopped', async () => (await api(network, `/vms/${vmId}`, token)).body.state === 'stopped', 60_000);
    await page.getByTestId('vm-state').getByText('stopped').waitFor();
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.getByText(/^Start: the VM is \w+\.$/).waitFor();
    await eventually('the orchestrator has it running', async () => (await api(network, `/vms/${vmId}`, token)).body.state === 'running', 60_000);
    await page.getByTestId('vm-state').getByText('running').waitFor();
    await page.getByRole('button', { name: 'Reboot', exact: true }).click();
    await page.getByText(/^Reboot: the VM is \w+\.$/).waitFor();
    await eventually('the orchestrator has it running after the reboot', async () => (await api(network, `/vms/${vmId}`, token)).body.state === 'running', 60_000);
  });

  test('a control the VM is not in the state for is refused in words, nothing changes', async () => {
    const response = await fetch(`${network.apiUrl}/vms/${vmId}/start`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 409, 'starting a running VM is refused');
    assert.equal(await page.getByRole('button', { name: 'Start', exact: true }).isDisabled(), true, 'the page does not offer it');
    assert.equal((await api(network, `/vms/${vmId}`, token)).body.state, 'running');
  });

  test('a VM of a seed template shows each service check as its node reports it', async () => {
    // The seed PostgreSQL template checks cloud-init and tcp :5432; on the test driver no guest
    // boots, so the node reports both not ready, each with its reason.
    const seed = (await api(network, '/templates/postgresql')).body;
    assert.ok(seed.template_id, 'decloud dev publishes the seed templates on chain');
    await page.getByRole('link', { name: 'Deploy' }).click();
    await page.getByLabel('Node').selectOption(network.nodeId);
    await page.getByLabel('Template').selectOption(String(seed.template_id));
    await page.getByLabel('Funding (USDC)').fill('3');
    await page.getByLabel(/^Burstable/).check();
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    await confirmTx(page, 'Open a lease');
    await page.getByRole('heading', { level: 1, name: 'Lease 2' }).waitFor();
    templateVmId = await eventually('the template VM is reported with its checks', async () => {
      const found = (await api(network, '/vms', token)).body?.find((v) => String(v.lease_id) === '2');
      if (!found) return false;
      const detail = (await api(network, `/vms/${found.vm_id}`, token)).body;
      return detail.readiness?.reported_at && detail.readiness.services.every((s) => s.checked_at) && found.vm_id;
    }, 60_000);
    await page.goto(`${network.appUrl}/vms/${templateVmId}`);
    const table = page.getByTestId('readiness-services');
    await table.waitFor();
    const detail = (await api(network, `/vms/${templateVmId}`, token)).body;
    assert.deepEqual(
      detail.readiness.services.map((s) => s.check),
      ['cloud-init finished', 'tcp :5432'],
      'the checks of the template, in its order',
    );
    assert.equal(detail.readiness.ready, false);
    await page.getByTestId('readiness-overall').getByText('not every service is ready yet').waitFor();
    await eventually('the page shows each check as the orchestrator reports it', async () => {
      const now = (await api(network, `/vms/${templateVmId}`, token)).body.readiness.services;
      const rows = await table.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      assert.deepEqual(
        rows,
        now.map((s) => [
          s.check,
          s.state === 'ready' ? 'ready' : 'not ready',
          `${new Date(s.checked_at * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`,
          s.state === 'ready' ? '—' : s.detail,
        ]),
      );
      return true;
    });
    const [cloudInit] = detail.readiness.services;
    assert.equal(cloudInit.state, 'not_ready', 'no guest boots on the test driver');
    assert.equal(cloudInit.detail, 'cloud-init has not finished');
    for (const s of detail.readiness.services.filter((s) => s.state === 'not_ready'))
      assert.ok(typeof s.detail === 'string' && s.detail.length > 0, `${s.check} says why it is not ready`);
  });

  test('the tenant reviews the node from the lease page: signed in the wallet, counted in the node’s rating', async () => {
    await page.goto(`${network.appUrl}/leases/2`);
    const form = page.getByRole('form', { name: 'Review lease 2' });
    await form.getByLabel(/^Its node/).check();
    await form.getByLabel('4 stars').check();
    await form.getByLabel(/^Your review/).fill('Quick to boot, quiet neighbours.');
    await form.getByRole('button', { name: 'Sign and publish review' }).click();
    await form.getByRole('status').filter({ hasText: 'Your review of the node of lease 2 is published.' }).waitFor();
    const node = (await api(network, `/nodes/${network.nodeId}`)).body;
    assert.deepEqual(node.rating, { count: 1, stars: 4, mean_hundredths: 400 });
    const [review, ...others] = (await api(network, `/reviews?node=${network.nodeId}`)).body;
    assert.equal(others.length, 0);
    assert.equal(review.reviewer.toLowerCase(), tenant.address.toLowerCase(), 'signed by the tenant’s wallet');
    assert.equal(review.lease_id, '2');
    assert.equal(review.text, 'Quick to boot, quiet neighbours.');
    // The node's page shows the aggregate and the review.
    await page.goto(`${network.appUrl}/nodes/${network.nodeId}`);
    await page.getByTestId('rating').getByText('4.00 stars from 1 review').waitFor();
    await page.getByTestId('reviews').getByText('Quick to boot, quiet neighbours.').waitFor();
  });

  test('a second review of the same node for the same lease is refused in words, nothing stored', async () => {
    await page.goto(`${network.appUrl}/leases/2`);
    const form = page.getByRole('form', { name: 'Review lease 2' });
    await form.getByLabel(/^Its node/).check();
    await form.getByLabel('1 star', { exact: true }).check();
    await form.getByRole('button', { name: 'Sign and publish review' }).click();
    await form
      .getByRole('alert')
      .filter({ hasText: 'You have already reviewed its node for lease 2: each lease gets one review of its node and one of its template.' })
      .waitFor();
    assert.deepEqual((await api(network, `/nodes/${network.nodeId}`)).body.rating, { count: 1, stars: 4, mean_hundredths: 400 });
  });

  test('the tenant reviews the template the lease deployed: shown on the template’s page', async () => {
    await page.goto(`${network.appUrl}/leases/2`);
    const form = page.getByRole('form', { name: 'Review lease 2' });
    await form.getByLabel(/^Its template/).check();
    await form.getByLabel('5 stars').check();
    await form.getByRole('button', { name: 'Sign and publish review' }).click();
    await form.getByRole('status').filter({ hasText: 'Your review of the template of lease 2 is published.' }).waitFor();
    const seed = (await api(network, '/templates/postgresql')).body;
    assert.deepEqual(seed.rating, { count: 1, stars: 5, mean_hundredths: 500 });
    await page.goto(`${network.appUrl}/templates/postgresql`);
    await page.getByTestId('rating').getByText('5.00 stars from 1 review').waitFor();
    await page.getByTestId('reviews').getByText('5 of 5 stars').waitFor();
    // Lease 1 deployed no template: only its node is offered for review, on its VM's page too.
    await page.goto(`${network.appUrl}/vms/${vmId}`);
    await page.getByRole('form', { name: 'Review lease 1' }).getByLabel(/^Its node/).waitFor();
    assert.equal(await page.getByRole('form', { name: 'Review lease 1' }).getByLabel(/^Its template/).count(), 0);
  });

  test('the VM page and the account page: no serious accessibility violation, and they fit 375 px', async () => {
    await checkPage(page, network.appUrl, '/leases/2', 'Lease 2', assert);
    await checkPage(page, network.appUrl, `/nodes/${network.nodeId}`, 'Node', assert);
    await checkPage(page, network.appUrl, '/templates/postgresql', 'PostgreSQL', assert);
    await checkPage(page, network.appUrl, `/vms/${vmId}`, `VM ${vmId}`, assert);
    await checkPage(page, network.appUrl, `/vms/${templateVmId}`, `VM ${templateVmId}`, assert);
    await checkPage(page, network.appUrl, '/account', 'Account', assert);
  });

  test('closes the lease from the VM page: the unspent funding returns exactly, the VM goes', async () => {
    await page.goto(`${network.appUrl}/vms/${vmId}`);
    const escrowBefore = await chain.escrowBalance(tenant.address);
    await page.getByRole('button', { name: 'Close lease 1' }).click();
    await confirmTx(page, 'Close lease 1');
    const lease = await chain.lease(1);
    assert.equal(lease.status, 2);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore + lease.funded - lease.settled);
    await eventually('the orchestrator stops the VM', async () => {
      const vm = await api(network, `/vms/${vmId}`, token);
      return vm.status === 200 && vm.body.state !== 'running' && vm.body.state;
    });
  });

  test('lets the scheduler choose: its plan and why shown, then the lease opened on that node', async () => {
    await page.getByRole('link', { name: 'Deploy' }).click();
    await page.getByLabel('Node').selectOption('scheduler');
    await page.getByLabel('Template').selectOption('');
    await page.getByLabel('Funding (USDC)').fill('1');
    await page.getByLabel(/^Burstable/).check();
    const askPlan = () =>
      fetch(`${network.apiUrl}/scheduler/plan`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ vcpus: 1, memory_gib: 1, disk_gib: 2, tier: 'burstable' }),
      }).then((r) => r.json());
    const why = page.getByTestId('plan-why');
    await why.waitFor();
    // The page shows the numbers of the orchestrator's plan (asked again until both agree, since
    // uptime and free compute move with heartbeats).
    const plan = await eventually('the page explains the scheduler’s plan', async () => {
      const plan = await askPlan();
      const words = (await why.innerText()).replace(/\s+/g, ' ');
      const uptime = plan.why.uptime_bps == null ? 'not measured yet' : `${(plan.why.uptime_bps / 100).toFixed(2)}%`;
      assert.match(words, /^Why: of 1 node considered, 1 fits this VM; /);
      assert.ok(words.includes(`best 30-day uptime (${uptime})`), words);
      assert.ok(words.includes(`(${plan.why.free_compute_units_after} compute units after this VM)`), words);
      return plan;
    });
    assert.equal(plan.node_id, network.nodeId, 'the only node of the network fits');
    assert.deepEqual([plan.why.considered, plan.why.fitting], [1, 1]);
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    await confirmTx(page, 'Open a lease');
    await page.getByRole('heading', { level: 1, name: 'Lease 3' }).waitFor();
    const lease = await chain.lease(3);
    assert.equal(lease.nodeId, plan.node_id, 'the lease is on the node the scheduler chose');
    assert.equal(lease.tenant, tenant.address);
    assert.equal(lease.funded, 1n * USDC);
  });
});
