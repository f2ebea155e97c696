// The tenant's journey in real Chromium against a real local network: connect a wallet (on the
// wrong chain first), sign in, deposit with a permit and with approve, withdraw, a refused
// withdrawal that sends nothing, then sign out. After each step the chain's and the orchestrator's
// state is read directly and compared to the micro-USDC.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { checkPage, confirmTx } from './support/app.mjs';
import { launchBrowser } from './support/browser.mjs';
import { horizontalOverflow, seriousViolations } from './support/pages.mjs';
import { api, chainReader, eventually } from './support/chain.mjs';
import { startNetwork } from './support/network.mjs';
import { installWallet } from './support/wallet.mjs';

const USDC = 1_000_000n;

describe('tenant journey', () => {
  let network;
  let browser;
  let page;
  let wallet;
  let chain;
  let tenant;
  let token;

  before(async () => {
    network = await startNetwork();
    chain = chainReader(network);
    tenant = network.accounts[2];
    browser = await launchBrowser();
    page = await browser.newPage();
    // The wallet starts on Ethereum mainnet: the app must ask to switch.
    wallet = await installWallet(page, { privateKey: tenant.privateKey, rpcUrl: network.rpcUrl, chainId: 31337, startChainId: 1 });
  });

  after(async () => {
    await browser?.close();
    await network?.stop();
  });

  test('connects the injected wallet found through EIP-6963 and switches it to the network', async () => {
    await page.goto(network.appUrl);
    await page.getByRole('button', { name: 'Connect wallet' }).click();
    await page.getByRole('menuitem', { name: 'DeCloud Test Wallet' }).click();
    await page.getByTestId('connected-address').waitFor();
    const prompt = page.getByRole('button', { name: 'Switch network' });
    await prompt.waitFor();
    await prompt.click();
    await prompt.waitFor({ state: 'detached' });
    assert.equal(wallet.state.chainId, 31337);
    assert.equal(await page.getByTestId('connected-address').getAttribute('title'), tenant.address);
  });

  test('offers WalletConnect when the network has a project id', async () => {
    // The local network has none: give this page one in /config.json, as a production server
    // configured with walletconnect_project_id would. (Pairing needs WalletConnect's relay.)
    const other = await browser.newPage();
    await other.route('**/config.json', async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, json: { ...(await response.json()), walletConnectProjectId: 'decloud-test-project' } });
    });
    await other.goto(network.appUrl);
    await other.getByRole('button', { name: 'Connect wallet' }).click();
    await other.getByRole('menuitem', { name: 'WalletConnect' }).waitFor();
    await other.close();
  });

  test('signs in with Ethereum: the orchestrator holds a session for the address', async () => {
    await page.getByRole('link', { name: 'Account' }).click();
    await page.getByRole('button', { name: 'Sign in with Ethereum' }).click();
    await page.getByTestId('session').waitFor();
    assert.match(await page.getByTestId('session').innerText(), new RegExp(tenant.address, 'i'));
    const signed = wallet.state.signed.filter((s) => s.method === 'personal_sign');
    assert.equal(signed.length, 1, 'one message signed by the wallet');
    token = await page.evaluate(() => JSON.parse(localStorage.getItem('decloud.session')).token);
    const session = await api(network, '/auth/session', token);
    assert.equal(session.status, 200);
    assert.equal(session.body.address.toLowerCase(), tenant.address.toLowerCase());
    assert.equal(session.body.chain_id, 31337);
  });

  test('deposits 20 USDC with an EIP-2612 permit: one signature, one transaction', async () => {
    const [walletBefore, escrowBefore, nonceBefore] = [await chain.usdcBalance(tenant.address), await chain.escrowBalance(tenant.address), await chain.nonce(tenant.address)];
    await page.getByRole('link', { name: 'Funds' }).click();
    await page.getByLabel('Amount (USDC)').first().fill('20');
    await page.getByRole('button', { name: 'Review deposit' }).click();
    const review = page.getByLabel('Transaction review');
    await review.waitFor();
    assert.match(await review.innerText(), /Deposit 20\.00 USDC/);
    assert.match(await review.innerText(), /Network fee at most/);
    await page.getByRole('button', { name: 'Confirm in wallet' }).click();
    await page.getByText(/Deposit 20\.00 USDC: confirmed in block/).waitFor();
    assert.equal(await chain.usdcBalance(tenant.address), walletBefore - 20n * USDC);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore + 20n * USDC);
    assert.equal(await chain.nonce(tenant.address), nonceBefore + 1, 'exactly one transaction');
    assert.ok(wallet.state.signed.some((s) => s.method === 'eth_signTypedData_v4' && s.data.primaryType === 'Permit'));
    await eventually('the page shows the new escrow balance', async () =>
      /20\.00 USDC/.test(await page.getByTestId('escrow-balance').innerText()),
    );
  });

  test('deposits 5.25 USDC through approve, then deposit', async () => {
    const [walletBefore, escrowBefore, nonceBefore] = [await chain.usdcBalance(tenant.address), await chain.escrowBalance(tenant.address), await chain.nonce(tenant.address)];
    await page.getByLabel('Amount (USDC)').first().fill('5.25');
    await page.getByLabel(/Approve, then deposit/).check();
    await page.getByRole('button', { name: 'Review deposit' }).click();
    const review = page.getByLabel('Transaction review');
    await review.getByText(/Allow the escrow to take 5\.25 USDC/).waitFor();
    await page.getByRole('button', { name: 'Confirm in wallet' }).click();
    await review.getByText(/^Deposit 5\.25 USDC$/).waitFor();
    assert.equal(await chain.allowance(tenant.address), 5_250_000n, 'the approval is on-chain before the deposit is sent');
    await page.getByRole('button', { name: 'Confirm in wallet' }).click();
    await page.getByText(/Deposit 5\.25 USDC: confirmed in block/).waitFor();
    assert.equal(await chain.usdcBalance(tenant.address), walletBefore - 5_250_000n);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore + 5_250_000n);
    assert.equal(await chain.allowance(tenant.address), 0n);
    assert.equal(await chain.nonce(tenant.address), nonceBefore + 2);
  });

  test('withdraws 2.000001 USDC', async () => {
    const [walletBefore, escrowBefore] = [await chain.usdcBalance(tenant.address), await chain.escrowBalance(tenant.address)];
    await page.getByLabel('Amount (USDC)').nth(1).fill('2.000001');
    await page.getByRole('button', { name: 'Review withdrawal' }).click();
    await page.getByRole('button', { name: 'Confirm in wallet' }).click();
    await page.getByText(/Withdraw 2\.000001 USDC: confirmed in block/).waitFor();
    assert.equal(await chain.usdcBalance(tenant.address), walletBefore + 2_000_001n);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore - 2_000_001n);
  });

  test('the network page totals the free balances from the indexer, to the micro-USDC', async () => {
    let expected = 0n;
    for (const account of network.accounts) expected += await chain.escrowBalance(account.address);
    assert.equal(expected, 23_249_999n, 'only this tenant has deposited');
    await page.getByRole('link', { name: 'Network' }).click();
    await eventually('the indexer catches up', async () => (await page.getByTestId('escrowed').innerText()) === '23.249999 USDC');
  });

  test('a withdrawal above the balance is refused in words and sends nothing', async () => {
    await page.getByRole('link', { name: 'Funds' }).click();
    const [escrowBefore, nonceBefore] = [await chain.escrowBalance(tenant.address), await chain.nonce(tenant.address)];
    await page.getByLabel('Amount (USDC)').nth(1).fill('1000');
    await page.getByRole('button', { name: 'Review withdrawal' }).click();
    const alert = page.getByRole('alert').filter({ hasText: 'Your escrow balance is too low' });
    await alert.waitFor();
    assert.match(await alert.innerText(), /needs 1,000\.00 USDC but 23\.249999 USDC is available/);
    assert.equal(await page.getByRole('button', { name: 'Confirm in wallet' }).count(), 0);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore);
    assert.equal(await chain.nonce(tenant.address), nonceBefore);
  });

  test('an amount with more than 6 decimals is refused before anything is simulated', async () => {
    await page.getByLabel('Amount (USDC)').nth(1).fill('1.0000001');
    await page.getByRole('button', { name: 'Review withdrawal' }).click();
    await page.getByRole('alert').filter({ hasText: 'USDC has at most 6 decimals.' }).waitFor();
  });

  const RESOURCES = { vcpus: 1, memoryGiB: 1, storageGiB: 2, gpus: 0 };
  const BURSTABLE = 3;
  const BASIC = 0;
  let quoted;
  let vmId;
  let expectedState;

  async function fillDeploy(funding) {
    await page.getByRole('link', { name: 'Deploy' }).click();
    await page.getByLabel('Node').selectOption(network.nodeId);
    await page.getByLabel('vCPUs').fill('1');
    await page.getByLabel('Memory (GiB)').fill('1');
    await page.getByLabel('Storage (GiB)').fill('2');
    await page.getByLabel(/^Burstable/).check();
    await page.getByLabel(/^Basic/).check();
    await page.getByLabel('Funding (USDC)').fill(funding);
  }

  test('deploy shows the live rate from quoteRate and how long the funding lasts', async () => {
    quoted = await chain.quoteRate(network.nodeId, RESOURCES, BURSTABLE, BASIC);
    await fillDeploy('0.2');
    const micro = (v) => `${(Number(v) / 1e6).toFixed(6).replace(/0{1,4}$/, '')} USDC`;
    await eventually('the quote shows', async () => (await page.getByTestId('rate').innerText()) === micro(quoted));
    const seconds = (200_000n * 3600n) / quoted;
    assert.ok(seconds < 86_400n, 'this funding lasts less than a day');
    await page.getByTestId('quote').getByText(/0\.20 USDC lasts \d+ hours?/).waitFor();
  });

  test('letting the scheduler choose: its plan, or why no node fits, in words', async () => {
    await page.getByLabel('Node').selectOption('scheduler');
    const free = (await api(network, `/nodes/${network.nodeId}`)).body.free.compute_units;
    if (free >= 300) {
      await page.getByText(`The scheduler chose node ${network.nodeId.slice(0, 8)}…${network.nodeId.slice(-6)}.`).waitFor();
    } else {
      await page.getByText(/^No node fits: /).waitFor();
    }
  });

  test('a lease funded beyond the balance is refused in words, nothing sent', async () => {
    await page.getByLabel('Node').selectOption(network.nodeId);
    const nonce = await chain.nonce(tenant.address);
    await page.getByLabel('Funding (USDC)').fill('500');
    await page.getByRole('button', { name: 'Review lease' }).click();
    await page.getByRole('alert').filter({ hasText: 'Your escrow balance is too low' }).waitFor();
    assert.equal(await chain.nonce(tenant.address), nonce);
  });

  test('a price raised after the review is caught before sending: nothing sent', async () => {
    await fillDeploy('0.2');
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    await page.getByLabel('Transaction review').waitFor();
    const operatorKey = network.accounts[1].privateKey;
    const before = (await chain.node(network.nodeId)).prices;
    await chain.registryAs(operatorKey, 'setPrices', [network.nodeId, { ...before, memoryGiBPerHour: before.memoryGiBPerHour * 2n }]);
    const nonce = await chain.nonce(tenant.address);
    await page.getByRole('button', { name: 'Confirm in wallet' }).click();
    await page.getByRole('alert').filter({ hasText: "Not sent: The node's price went up" }).waitFor();
    assert.equal(await chain.nonce(tenant.address), nonce);
    assert.equal(await chain.leaseCount(), 0n);
    await chain.registryAs(operatorKey, 'setPrices', [network.nodeId, before]);
    assert.equal(await chain.quoteRate(network.nodeId, RESOURCES, BURSTABLE, BASIC), quoted);
  });

  test('opens a lease at the quoted rate: on-chain, then its VM in the orchestrator', async () => {
    const escrowBefore = await chain.escrowBalance(tenant.address);
    // A debug build of the agent rates its CPU far below a release build (README): the VM runs
    // when the node has the 300 compute units a burstable vCPU holds, and fails placement if not.
    const free = (await api(network, `/nodes/${network.nodeId}`)).body.free.compute_units;
    expectedState = free >= 300 ? 'running' : 'failed';
    await fillDeploy('0.2');
    await eventually('the quote shows', async () => (await page.getByTestId('rate').count()) === 1);
    await page.getByRole('button', { name: 'Review lease' }).click();
    await confirmTx(page, 'Open a lease');
    await page.getByRole('heading', { level: 1, name: 'Lease 1' }).waitFor();
    const lease = await chain.lease(1);
    assert.equal(lease.tenant, tenant.address);
    assert.equal(lease.nodeId, network.nodeId);
    assert.equal(lease.status, 1);
    assert.equal(lease.ratePerHour, quoted);
    assert.equal(lease.funded, 200_000n);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore - 200_000n);
    const vm = await eventually(`the orchestrator's VM for lease 1 is ${expectedState}`, async () => {
      const vms = await api(network, '/vms', token);
      return vms.body?.find((v) => String(v.lease_id) === '1' && v.state === expectedState);
    });
    vmId = vm.vm_id;
    const leases = await api(network, '/leases', token);
    assert.ok(leases.body.some((l) => String(l.lease_id) === '1'));
    await page.getByTestId('vm-state').getByText(expectedState).waitFor();
  });

  test('the lease shows its funds left as the contract counts them, and warns under a day', async () => {
    const card = page.getByTestId('lease-1');
    await eventually('funds left match the contract', async () => {
      const lease = await chain.lease(1);
      const left = lease.funded - (await chain.accrued(1));
      const shown = await card.getByTestId('funds-left').innerText();
      return shown === `${(Number(left) / 1e6).toFixed(6).replace(/0{1,4}$/, '')} USDC`;
    });
    await card.getByTestId('low-funds').waitFor();
  });

  test('tops the lease up in place: the warning goes, the funding grows to the micro-USDC', async () => {
    const escrowBefore = await chain.escrowBalance(tenant.address);
    const card = page.getByTestId('lease-1');
    await card.getByLabel('Top up (USDC)').fill('5');
    await card.getByRole('button', { name: 'Review top-up' }).click();
    await confirmTx(page, 'Top up lease 1 with 5.00 USDC');
    assert.equal((await chain.lease(1)).funded, 5_200_000n);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore - 5_000_000n);
    await card.getByTestId('low-funds').waitFor({ state: 'detached' });
  });

  test('the VM page shows its state as the orchestrator has it', async () => {
    await page.goto(`${network.appUrl}/vms/${vmId}`);
    await page.getByTestId('vm-state').getByText(expectedState).waitFor();
    assert.equal((await api(network, `/vms/${vmId}`, token)).body.state, expectedState);
  });

  test('"Attest" on the service: the orchestrator signs its state, with toasts', async () => {
    await page.getByRole('button', { name: 'Attest' }).click();
    const toast = page.getByText(/^Attest: signed as attestation #(\d+)\.$/);
    await toast.waitFor();
    const id = Number((await toast.innerText()).match(/#(\d+)/)[1]);
    const evidence = await api(network, `/attestations/${id}`);
    assert.equal(evidence.body.attestation.subject, `vm:${vmId}`);
    assert.equal(evidence.body.attestation.kind, 'service.state');
    assert.equal(JSON.parse(evidence.body.attestation.payload).requested_by.toLowerCase(), tenant.address.toLowerCase());
  });

  test('"Distribute": a file hashed in the browser, to a served region; an unknown region refused in words', async () => {
    const bytes = Buffer.from('decloud web test artifact\n');
    const { createHash } = await import('node:crypto');
    const sha = createHash('sha256').update(bytes).digest('hex');
    await page.getByLabel(/^File/).setInputFiles({ name: 'site.tar', mimeType: 'application/x-tar', buffer: bytes });
    await eventually('the browser hashed the file', async () => (await page.getByLabel('SHA-256').inputValue()) === sha);
    await page.getByLabel(/^Regions/).fill('mars');
    await page.getByRole('button', { name: 'Distribute', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'no active node serves these regions' }).waitFor();
    await page.getByLabel(/^Regions/).fill('local');
    await page.getByRole('button', { name: 'Distribute', exact: true }).click();
    const toast = page.getByText(/^Distribute: signed as attestation #(\d+)\.$/);
    await toast.waitFor();
    const id = Number((await toast.innerText()).match(/#(\d+)/)[1]);
    const evidence = await api(network, `/attestations/${id}`);
    assert.equal(evidence.body.attestation.kind, 'service.distribution');
    const payload = JSON.parse(evidence.body.attestation.payload);
    assert.equal(JSON.stringify(payload).includes(sha), true, 'the attested payload names the file hash');
    assert.equal(JSON.stringify(payload).includes('site.tar'), true);
  });

  test('/deploy, /leases/1 and the VM page: no serious accessibility violation, and they fit 375 px', async () => {
    await checkPage(page, network.appUrl, '/deploy', 'Deploy a VM', assert);
    await checkPage(page, network.appUrl, '/leases/1', 'Lease 1', assert);
    await checkPage(page, network.appUrl, `/vms/${vmId}`, `VM ${vmId}`, assert);
  });

  test('closes the lease: the unspent funding returns to the escrow balance exactly, the VM goes', async () => {
    const escrowBefore = await chain.escrowBalance(tenant.address);
    await page.goto(`${network.appUrl}/leases/1`);
    const card = page.getByTestId('lease-1');
    await card.getByRole('button', { name: 'Close lease' }).click();
    await confirmTx(page, 'Close lease 1');
    const lease = await chain.lease(1);
    assert.equal(lease.status, 2);
    assert.equal(await chain.escrowBalance(tenant.address), escrowBefore + lease.funded - lease.settled);
    await card.getByTestId('lease-status').getByText('Closed').waitFor();
    if (expectedState === 'running') {
      await eventually('the orchestrator stops the VM', async () => {
        const vm = await api(network, `/vms/${vmId}`, token);
        return vm.status === 200 && vm.body.state !== 'running' && vm.body.state;
      });
    }
  });

  // Every page of the tenant, signed in and with data: accessible, and usable on a phone.
  for (const [path, heading] of [
    ['/', 'The DeCloud network'],
    ['/funds', 'Funds'],
    ['/leases', 'Leases'],
    ['/account', 'Account'],
    ['/no-such-page', 'Page not found'],
  ]) {
    test(`${path}: no serious accessibility violation, and it fits 375 px`, async () => {
      for (const width of [1280, 375]) {
        await page.setViewportSize({ width, height: 800 });
        await page.goto(`${network.appUrl}${path}`);
        await page.getByRole('heading', { level: 1, name: heading }).waitFor();
        await page.getByTestId('connected-address').waitFor();
        assert.deepEqual(await seriousViolations(page), [], `${path} at ${width} px`);
        assert.equal(await horizontalOverflow(page), 0, `${path} overflows at ${width} px`);
      }
      await page.setViewportSize({ width: 1280, height: 800 });
    });
  }

  test('signs out: the orchestrator revokes the session', async () => {
    await page.getByRole('link', { name: 'Account' }).click();
    await page.getByRole('button', { name: /Sign out/ }).click();
    await page.getByRole('button', { name: 'Sign in with Ethereum' }).waitFor();
    const session = await api(network, '/auth/session', token);
    assert.equal(session.status, 401);
  });
});
