// The operator's journey in real Chromium against a real local network: register a node by
// pasting the agent's machine id and key (a wrong id and a price under the floor refused first),
// find it in the marketplace, pause and resume it, stake, unstake, withdraw after the unbonding
// period, retire it. The chain and the orchestrator are read directly after each step.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { encodePacked, keccak256, toHex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { checkPage, confirmTx, connectWallet, signIn } from './support/app.mjs';
import { launchBrowser } from './support/browser.mjs';
import { api, chainReader, eventually } from './support/chain.mjs';
import { startNetwork } from './support/network.mjs';
import { installWallet } from './support/wallet.mjs';

const USDC = 1_000_000n;

describe('operator journey', () => {
  let network;
  let browser;
  let page;
  let chain;
  let operator;
  const machineId = toHex(randomBytes(32));
  const nodeKey = privateKeyToAccount(generatePrivateKey()).address;
  let nodeId;

  before(async () => {
    network = await startNetwork();
    chain = chainReader(network);
    operator = network.accounts[3];
    nodeId = keccak256(encodePacked(['bytes32', 'address'], [machineId, operator.address]));
    browser = await launchBrowser();
    page = await browser.newPage();
    await installWallet(page, { privateKey: operator.privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
    await connectWallet(page, network.appUrl);
    await signIn(page);
  });

  after(async () => {
    await browser?.close();
    await network?.stop();
  });

  async function fillRegistration({ id, cpuPrice }) {
    await page.getByLabel('Machine id').fill(machineId);
    await page.getByLabel('Node key').fill(nodeKey);
    await page.getByLabel('Node id (to check)').fill(id);
    await page.getByLabel('Region').fill('eu-test');
    await page.getByLabel('Endpoint').fill('https://node.example:8443');
    await page.getByLabel('vCPUs').fill('8');
    await page.getByLabel('Memory (GiB)').fill('16');
    await page.getByLabel('Disk (GiB)').fill('200');
    await page.getByLabel('CPU (USDC per vCPU-hour)').fill(cpuPrice);
    await page.getByLabel('Memory (USDC per GiB-hour)').fill('0.003');
    await page.getByRole('button', { name: 'Review registration' }).click();
  }

  test('a node id that is not this machine id for this wallet is refused, nothing sent', async () => {
    const nonce = await chain.nonce(operator.address);
    await page.getByRole('link', { name: 'Operate' }).click();
    await fillRegistration({ id: keccak256(encodePacked(['bytes32', 'address'], [machineId, network.accounts[4].address])), cpuPrice: '0.006' });
    await page.getByRole('alert').filter({ hasText: 'This node id is not the one of this machine id' }).waitFor();
    assert.equal(await chain.nonce(operator.address), nonce);
  });

  test('a price under the floor is refused in words, nothing sent', async () => {
    const nonce = await chain.nonce(operator.address);
    await fillRegistration({ id: nodeId, cpuPrice: '0.004' });
    await page.getByRole('alert').filter({ hasText: 'is below the network’s floor of 0.005 USDC'.replace('’', "'") }).waitFor();
    assert.equal(await chain.nonce(operator.address), nonce);
  });

  test('registers the node: on-chain with its key, capabilities and prices, then in the orchestrator', async () => {
    await fillRegistration({ id: nodeId, cpuPrice: '0.006' });
    await confirmTx(page, `Register node ${nodeId.slice(0, 8)}…${nodeId.slice(-6)}`);
    const node = await chain.node(nodeId);
    assert.equal(node.operator, operator.address);
    assert.equal(node.nodeKey, nodeKey);
    assert.equal(node.status, 1);
    assert.equal(node.region, 'eu-test');
    assert.equal(node.endpoint, 'https://node.example:8443');
    assert.deepEqual([node.capabilities.vcpus, node.capabilities.memoryGiB, node.capabilities.diskGiB, node.capabilities.flags], [8, 16, 200, 1]);
    assert.equal(node.prices.cpuPerHour, 6_000n);
    assert.equal(node.prices.memoryGiBPerHour, 3_000n);
    const listed = await eventually('the orchestrator lists the node', async () => {
      const r = await api(network, `/nodes/${nodeId}`);
      return r.status === 200 && r.body;
    });
    assert.equal(listed.status, 'active');
    assert.equal(listed.prices.cpu_per_hour, 6000);
    await page.getByTestId(`node-${nodeId}`).getByTestId('node-status').getByText('Active').waitFor();
  });

  test('the marketplace finds it by region and shows its prices and capacity', async () => {
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByLabel('Region').fill('eu-test');
    await page.getByRole('button', { name: 'Search' }).click();
    await eventually('one node in eu-test', async () => (await page.getByTestId('node-total').innerText()) === '1');
    const all = await api(network, '/nodes?region=eu-test');
    assert.equal(all.body.total, 1);
    await page.getByRole('link', { name: `${nodeId.slice(0, 8)}…${nodeId.slice(-6)}` }).first().click();
    await page.getByText('0.006 USDC per vCPU-hour').waitFor();
    await page.getByText('8 vCPUs').waitFor();
  });

  test('pauses and resumes the node', async () => {
    await page.getByRole('link', { name: 'Operate' }).click();
    const row = page.getByTestId(`node-${nodeId}`);
    await row.getByRole('button', { name: 'Pause' }).click();
    await confirmTx(page, `Pause node`);
    assert.equal(await chain.nodeStatus(nodeId), 2);
    await eventually('the orchestrator sees the pause', async () => (await api(network, `/nodes/${nodeId}`)).body?.status === 'paused');
    await row.getByRole('button', { name: 'Resume' }).click();
    await confirmTx(page, `Resume node`);
    assert.equal(await chain.nodeStatus(nodeId), 1);
    await eventually('the orchestrator sees the resume', async () => (await api(network, `/nodes/${nodeId}`)).body?.status === 'active');
  });

  test('finds the node\'s attestations and verifies one in the browser: signature, link, proof, root on-chain', async () => {
    const subject = `node:${nodeId}`;
    const list = await eventually('the orchestrator attests the node', async () => {
      const r = await api(network, `/attestations?subject=${subject}`);
      return r.status === 200 && r.body.length > 0 && r.body;
    });
    await page.getByRole('link', { name: 'Attestations' }).click();
    await page.getByLabel('Subject').fill(subject);
    await page.getByRole('button', { name: 'Find' }).click();
    const card = page.getByTestId(`attestation-${list[0].sequence}`);
    await card.waitFor();
    // Batches are anchored every 30 s on the local network: verify until this one is on-chain.
    await eventually(
      'the attestation verifies',
      async () => {
        await card.getByRole('button', { name: 'Verify' }).click();
        await card.getByTestId('verdict').waitFor();
        return (await card.getByTestId('verdict').innerText()) === 'VALID';
      },
      120_000,
    );
    for (const check of ['Signer domain', 'Payload', 'Signature', 'Chain link', 'Merkle proof', 'Anchored on-chain']) {
      await card.getByText(new RegExp(`✓ ${check}:`)).waitFor();
    }
  });

  test('an attestation altered on its way to the browser fails verification', async () => {
    const subject = `node:${nodeId}`;
    const sequence = (await api(network, `/attestations?subject=${subject}`)).body[0].sequence;
    await page.route(`**/api/v1/attestations/${sequence}`, async (route) => {
      const response = await route.fetch();
      const body = await response.json();
      body.attestation.payload = body.attestation.payload.replace('"', '" ');
      await route.fulfill({ response, json: body });
    });
    const card = page.getByTestId(`attestation-${sequence}`);
    await card.getByRole('button', { name: 'Verify' }).click();
    await eventually('the verdict changes', async () => (await card.getByTestId('verdict').innerText()) === 'NOT VERIFIED');
    await card.getByText(/✗ Payload: The payload hashes to/).waitFor();
    await page.unroute(`**/api/v1/attestations/${sequence}`);
  });

  test('stakes 100 USDC with a permit', async () => {
    await page.getByRole('link', { name: 'Operate' }).click();
    const [wallet, pool] = [await chain.usdcBalance(operator.address), await chain.stakingBalance()];
    await page.getByLabel('Stake (USDC)', { exact: true }).fill('100');
    await page.getByRole('button', { name: 'Review stake' }).click();
    await confirmTx(page, 'Stake 100.00 USDC');
    assert.equal(await chain.activeStake(operator.address), 100n * USDC);
    assert.equal(await chain.usdcBalance(operator.address), wallet - 100n * USDC);
    assert.equal(await chain.stakingBalance(), pool + 100n * USDC);
  });

  test('unstakes 40 USDC; withdrawing before the unbonding period ends is refused and sends nothing', async () => {
    await page.getByLabel('Unstake (USDC)').fill('40');
    await page.getByRole('button', { name: 'Review unstake' }).click();
    await confirmTx(page, 'Start unstaking 40.00 USDC');
    assert.equal(await chain.activeStake(operator.address), 60n * USDC);
    assert.equal(await chain.unbonding(operator.address), 40n * USDC);
    const nonce = await chain.nonce(operator.address);
    await page.getByTestId('unstake-request-0').getByRole('button', { name: 'Withdraw' }).click();
    await page.getByRole('alert').filter({ hasText: 'This stake is still unbonding until' }).waitFor();
    assert.equal(await chain.nonce(operator.address), nonce);
  });

  test('withdraws the 40 USDC after the unbonding period', async () => {
    await chain.advance((await chain.unbondingPeriod()) + 1n);
    const wallet = await chain.usdcBalance(operator.address);
    await page.getByTestId('unstake-request-0').getByRole('button', { name: 'Withdraw' }).click();
    await confirmTx(page, 'Withdraw unstaked 40.00 USDC');
    assert.equal(await chain.usdcBalance(operator.address), wallet + 40n * USDC);
    assert.equal(await chain.unbonding(operator.address), 0n);
    assert.equal(await chain.activeStake(operator.address), 60n * USDC);
  });

  for (const [path, heading] of [
    ['/operator', 'Operate nodes'],
    ['/nodes', 'Nodes'],
    ['/templates', 'Templates'],
    ['/templates/postgresql', 'PostgreSQL 16'],
    ['/attestations', 'Attestations'],
  ]) {
    test(`${path}: no serious accessibility violation, and it fits 375 px`, async () => {
      await checkPage(page, network.appUrl, path, heading, assert);
    });
  }

  test('node detail: no serious accessibility violation, and it fits 375 px', async () => {
    await checkPage(page, network.appUrl, `/nodes/${nodeId}`, /^Node/, assert);
  });

  test('retires the node: final on-chain, gone from the marketplace', async () => {
    await page.goto(`${network.appUrl}/operator`);
    const row = page.getByTestId(`node-${nodeId}`);
    await row.getByRole('button', { name: 'Retire' }).click();
    await confirmTx(page, 'Retire (final) node');
    assert.equal(await chain.nodeStatus(nodeId), 3);
    await eventually('the marketplace drops the node', async () => (await api(network, '/nodes?region=eu-test')).body?.total === 0);
    await row.getByTestId('node-status').getByText('Retired').waitFor();
    assert.equal(await row.getByRole('button').count(), 0, 'a retired node has no action left');
  });
});
