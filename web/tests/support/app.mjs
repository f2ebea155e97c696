// Steps every journey starts with, done through the app's own UI.
import { horizontalOverflow, seriousViolations } from './pages.mjs';

/** Opens the app and connects the injected test wallet (already on the network's chain). */
export async function connectWallet(page, appUrl) {
  await page.goto(appUrl);
  await page.getByRole('button', { name: 'Connect wallet' }).click();
  await page.getByRole('menuitem', { name: 'DeCloud Test Wallet' }).click();
  await page.getByTestId('connected-address').waitFor();
}

/** Signs in with Ethereum from the Account page; returns the session token the app holds. */
export async function signIn(page) {
  await page.getByRole('link', { name: 'Account' }).click();
  await page.getByRole('button', { name: 'Sign in with Ethereum' }).click();
  await page.getByTestId('session').waitFor();
  return page.evaluate(() => JSON.parse(localStorage.getItem('decloud.session')).token);
}

/** Confirms the transaction under review; waits for the confirmed toast of the label it starts with. */
export async function confirmTx(page, label) {
  await page.getByRole('button', { name: 'Confirm in wallet' }).click();
  await page.getByText(new RegExp(`^${escape(label)}.*: confirmed in block \\d+\\.$`)).first().waitFor();
}

export function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Loads `path` at desktop and phone width: no serious axe violation, nothing wider than the screen. */
export async function checkPage(page, appUrl, path, heading, assert) {
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: 800 });
    await page.goto(`${appUrl}${path}`);
    await page.getByRole('heading', { level: 1, name: heading }).waitFor();
    await page.getByTestId('connected-address').waitFor();
    assert.deepEqual(await seriousViolations(page), [], `${path} at ${width} px`);
    assert.equal(await horizontalOverflow(page), 0, `${path} overflows at ${width} px`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}
