// The operator's earnings: a tenant's lease on the local network's node accrues for an hour of
// chain time, the node's operator sees what each lease can pay out and claims it all from the
// browser; the USDC it receives is exactly what the escrow records as paid.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { checkPage, confirmTx, connectWallet } from './support/app.mjs';
import { launchBrowser } from './support/browser.mjs';
import { chainReader, eventually } from './support/chain.mjs';
import { startNetwork } from './support/network.mjs';
import { installWallet } from './support/wallet.mjs';

const format = (micro) => `${(Number(micro) / 1e6).toFixed(6).replace(/0{1,4}$/, '')} USDC`;

describe('operator earnings', () => {
  let network;
  let browser;
  let page;
  let chain;
  let operator;

  before(async () => {
    network = await startNetwork();
    chain = chainReader(network);
    operator = network.accounts[1];
    // A tenant rents from the local network's node, straight through the contracts.
    const tenant = network.accounts[2].privateKey;
    const resources = { vcpus: 1, memoryGiB: 1, storageGiB: 2, gpus: 0 };
    const rate = await chain.quoteRate(network.nodeId, resources, 3, 0);
    await chain.usdcAs(tenant, 'approve', [network.deployment.contracts.leaseEscrow.address, 10_000_000n]);
    await chain.escrowAs(tenant, 'deposit', [10_000_000n]);
    await chain.escrowAs(tenant, 'openLease', [network.nodeId, resources, 3, 0, 0n, 0n, rate, 10_000_000n]);
    await chain.advance(3600);
    browser = await launchBrowser();
    page = await browser.newPage();
    await installWallet(page, { privateKey: operator.privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
    await connectWallet(page, network.appUrl);
  });

  after(async () => {
    await browser?.close();
    await network?.stop();
  });

  test('shows what each lease can pay out, as the escrow computes it', async () => {
    await page.getByRole('link', { name: 'Operate' }).click();
    const row = page.getByTestId('earning-1');
    await row.waitFor();
    await eventually('the claimable amount matches the contract', async () => (await row.getByTestId('claimable').innerText()) === format(await chain.claimable(1)));
    assert.ok((await chain.claimable(1)) > 0n, 'an hour of accrual is claimable');
  });

  test('claims everything: the USDC received is exactly what the escrow records as paid', async () => {
    const [walletBefore, paidBefore] = [await chain.usdcBalance(operator.address), (await chain.lease(1)).operatorPaid];
    await page.getByRole('button', { name: 'Claim all' }).click();
    await confirmTx(page, 'Claim');
    const lease = await chain.lease(1);
    const received = (await chain.usdcBalance(operator.address)) - walletBefore;
    assert.ok(received > 0n);
    assert.equal(received, lease.operatorPaid - paidBefore);
    // The claim settled up to its own block: nothing more is claimable at that block.
    assert.equal(await chain.claimable(1), 0n);
  });

  test('/operator with earnings: no serious accessibility violation, and it fits 375 px', async () => {
    await checkPage(page, network.appUrl, '/operator', 'Operate nodes', assert);
  });
});
