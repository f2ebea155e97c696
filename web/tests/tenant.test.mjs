// The tenant's journey in real Chromium against a real local network: connect a wallet (on the
// wrong chain first), sign in, deposit with a permit and with approve, withdraw, a refused
// withdrawal that sends nothing, then sign out. After each step the chain's and the orchestrator's
// state is read directly and compared to the micro-USDC.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
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
