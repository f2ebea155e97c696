// Takes the screenshots of the main pages shown in web/README.md, in Debian's Chromium against a
// real `decloud dev`, with state made through the app itself (a deposit, a sign-in).
// Usage: npm run build && node scripts/screenshots.mjs
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { confirmTx, connectWallet, signIn } from '../tests/support/app.mjs';
import { launchBrowser } from '../tests/support/browser.mjs';
import { repoRoot, startNetwork, webDir } from '../tests/support/network.mjs';
import { installWallet } from '../tests/support/wallet.mjs';

const out = join(webDir, 'docs', 'screenshots');
const network = await startNetwork();
const browser = await launchBrowser();
try {
  const shoot = async (page, name, path, heading) => {
    await page.goto(`${network.appUrl}${path}`);
    await page.getByRole('heading', { level: 1, name: heading }).waitFor();
    await page.getByTestId('connected-address').waitFor();
    // Balances and lists load after the page: let every query settle.
    await page.waitForLoadState('networkidle');
    await page.screenshot({ path: join(out, `${name}.png`), fullPage: true });
    console.log(`${name}.png`);
  };

  // A tenant (anvil account 2) with a deposit.
  const tenant = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await installWallet(tenant, { privateKey: network.accounts[2].privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
  await connectWallet(tenant, network.appUrl);
  await signIn(tenant);
  await tenant.getByRole('link', { name: 'Funds' }).click();
  await tenant.getByLabel('Amount (USDC)').first().fill('25');
  await tenant.getByRole('button', { name: 'Review deposit' }).click();
  await confirmTx(tenant, 'Deposit 25.00 USDC');
  await tenant.getByLabel('Amount (USDC)').nth(1).fill('5');
  await tenant.getByRole('button', { name: 'Review withdrawal' }).click();
  await tenant.getByLabel('Transaction review').waitFor();
  await tenant.screenshot({ path: join(out, 'funds.png'), fullPage: true });
  console.log('funds.png');
  await tenant.getByRole('button', { name: 'Cancel' }).click();
  // The access profile: an SSH key, a forwarded port and the password sealing key.
  await tenant.getByRole('link', { name: 'Account' }).click();
  const profile = tenant.getByTestId('profile');
  await profile.getByLabel(/^SSH public keys/).fill('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop');
  await profile.getByLabel(/^Extra ports/).fill('8080/tcp');
  await profile.getByRole('button', { name: 'Save keys and ports' }).click();
  await profile.getByRole('status').waitFor();
  await profile.getByRole('button', { name: 'Derive a sealing key from this wallet' }).click();
  await profile.getByText('derived by this wallet').waitFor();
  // A lease on the local network's node, deployed from the app.
  await tenant.getByRole('link', { name: 'Deploy' }).click();
  await tenant.getByLabel('Node').selectOption(network.nodeId);
  await tenant.getByLabel(/^Burstable/).check();
  await tenant.getByLabel('Funding (USDC)').fill('0.2');
  await tenant.getByTestId('rate').waitFor();
  await tenant.screenshot({ path: join(out, 'deploy.png'), fullPage: true });
  console.log('deploy.png');
  await tenant.getByRole('button', { name: 'Review lease' }).click();
  await confirmTx(tenant, 'Open a lease');
  await tenant.getByRole('heading', { level: 1, name: 'Lease 1' }).waitFor();
  await tenant.getByTestId('vm-state').waitFor();
  await tenant.screenshot({ path: join(out, 'lease.png'), fullPage: true });
  console.log('lease.png');
  // The VM page once it runs: how to connect, the password opened with the wallet, the console.
  await tenant.locator('a[href^="/vms/"]').first().click();
  await tenant.getByTestId('vm-state').getByText('running').waitFor({ timeout: 60_000 });
  await tenant.getByRole('button', { name: 'Show password' }).click();
  await tenant.getByTestId('credentials-password').waitFor();
  await tenant.getByRole('button', { name: 'Open console' }).click();
  await tenant.getByTestId('console-status').getByText(/./).waitFor();
  await tenant.screenshot({ path: join(out, 'vm.png'), fullPage: true });
  console.log('vm.png');
  await shoot(tenant, 'network', '/', 'The DeCloud network');
  await shoot(tenant, 'nodes', '/nodes', 'Nodes');
  await shoot(tenant, 'node', `/nodes/${network.nodeId}`, /^Node/);
  await shoot(tenant, 'templates', '/templates', 'Templates');
  await shoot(tenant, 'account', '/account', 'Account');
  await tenant.setViewportSize({ width: 375, height: 800 });
  await shoot(tenant, 'funds-375px', '/funds', 'Funds');

  // The dev network's operator (anvil account 1) and its node.
  const operator = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await installWallet(operator, { privateKey: network.accounts[1].privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
  await connectWallet(operator, network.appUrl);
  await signIn(operator);
  await shoot(operator, 'operator', '/operator', 'Operate nodes');

  // A template author (anvil account 4): a bundle checked by the validator, ready to sign.
  const author = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await installWallet(author, { privateKey: network.accounts[4].privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
  await connectWallet(author, network.appUrl);
  await author.getByRole('link', { name: 'Publish' }).click();
  const seed = (name) => ({ name, mimeType: 'text/plain', buffer: readFileSync(join(repoRoot, 'templates', 'seed', 'postgresql', name)) });
  const form = author.getByTestId('bundle-form');
  await form.getByLabel('template.toml').setInputFiles(seed('template.toml'));
  await form.getByLabel(/^user-data/).setInputFiles(seed('user-data'));
  await form.getByLabel('Price per deploy (USDC)').fill('1.5');
  await form.getByRole('button', { name: 'Check with the validator' }).click();
  await form.getByText('Passes the validator:').waitFor();
  await author.screenshot({ path: join(out, 'author.png'), fullPage: true });
  console.log('author.png');
} finally {
  await browser.close();
  await network.stop();
}
