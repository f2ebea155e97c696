// An EIP-1193 wallet injected into the page that really signs: the page's provider forwards each
// request to this process, where a viem local account holding an anvil key signs messages, typed
// data and transactions; every other request goes to anvil. It announces itself through EIP-6963
// like a browser extension wallet does.
import { createWalletClient, defineChain, http, toHex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

/**
 * Installs the wallet in `page` (before any script of the page runs). `startChainId` is the chain
 * the wallet reports at first: another than the network's tests the app's switch prompt.
 */
export async function installWallet(page, { privateKey, rpcUrl, chainId, startChainId = chainId }) {
  const account = privateKeyToAccount(privateKey);
  const chain = defineChain({
    id: chainId,
    name: 'anvil',
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  });
  const client = createWalletClient({ account, chain, transport: http(rpcUrl) });
  // Like a browser wallet, it shows no account to a site until the user connects it there.
  const state = { chainId: startChainId, signed: [], connected: false };
  let rpcId = 0;

  async function forward(method, params) {
    const response = await fetch(rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++rpcId, method, params }),
    });
    const body = await response.json();
    if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code, data: body.error.data });
    return body.result;
  }

  async function handle(method, params) {
    switch (method) {
      case 'eth_requestAccounts':
        state.connected = true;
        return [account.address];
      case 'eth_accounts':
        return state.connected ? [account.address] : [];
      case 'eth_chainId':
        return toHex(state.chainId);
      case 'net_version':
        return String(state.chainId);
      case 'wallet_requestPermissions':
        state.connected = true;
        return [{ parentCapability: 'eth_accounts' }];
      case 'wallet_getPermissions':
        return state.connected ? [{ parentCapability: 'eth_accounts' }] : [];
      case 'wallet_revokePermissions':
        state.connected = false;
        return null;
      case 'wallet_switchEthereumChain': {
        const wanted = Number(params[0].chainId);
        if (wanted !== chainId) throw Object.assign(new Error(`Unrecognized chain ${wanted}`), { code: 4902 });
        state.chainId = wanted;
        await page.evaluate((id) => window.__decloudTestWalletEmit('chainChanged', id), toHex(wanted));
        return null;
      }
      case 'personal_sign': {
        const [data, from] = params;
        if (from.toLowerCase() !== account.address.toLowerCase()) throw Object.assign(new Error('unknown account'), { code: 4100 });
        const signature = await account.signMessage({ message: { raw: data } });
        state.signed.push({ method, data });
        return signature;
      }
      case 'eth_signTypedData_v4': {
        const [from, json] = params;
        if (from.toLowerCase() !== account.address.toLowerCase()) throw Object.assign(new Error('unknown account'), { code: 4100 });
        const typed = JSON.parse(json);
        const signature = await account.signTypedData(withBigInts(typed));
        state.signed.push({ method, data: typed });
        return signature;
      }
      case 'eth_sendTransaction': {
        const [tx] = params;
        if (state.chainId !== chainId) throw Object.assign(new Error('wallet is on another chain'), { code: 4901 });
        const hash = await client.sendTransaction({
          to: tx.to,
          data: tx.data,
          value: tx.value ? BigInt(tx.value) : undefined,
          gas: tx.gas ? BigInt(tx.gas) : undefined,
        });
        state.signed.push({ method, data: tx, hash });
        return hash;
      }
      default:
        return forward(method, params);
    }
  }

  await page.exposeFunction('__decloudTestWallet', async (method, paramsJson) => {
    try {
      return JSON.stringify({ result: await handle(method, JSON.parse(paramsJson)) });
    } catch (e) {
      return JSON.stringify({ error: { code: e.code ?? -32603, message: e.shortMessage ?? e.message, data: e.data } });
    }
  });
  await page.addInitScript(() => {
      const listeners = new Map();
      const emit = (event, value) => (listeners.get(event) ?? []).forEach((fn) => fn(value));
      window.__decloudTestWalletEmit = emit;
      const provider = {
        async request({ method, params }) {
          const out = JSON.parse(await window.__decloudTestWallet(method, JSON.stringify(params ?? [])));
          if (out.error) throw Object.assign(new Error(out.error.message), out.error);
          return out.result;
        },
        on(event, fn) {
          listeners.set(event, [...(listeners.get(event) ?? []), fn]);
          return provider;
        },
        removeListener(event, fn) {
          listeners.set(event, (listeners.get(event) ?? []).filter((f) => f !== fn));
          return provider;
        },
      };
      const info = {
        uuid: '6f3c1e1a-4f59-4d8e-9a5c-1c0f0e7d2b11',
        name: 'DeCloud Test Wallet',
        icon: 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32" fill="%231d4ed8"/></svg>',
        rdns: 'dev.decloud.testwallet',
      };
      const announce = () =>
        window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
      window.addEventListener('eip6963:requestProvider', announce);
      announce();
  });
  return { account, state };
}

// JSON carries uint values as strings; sign them as the numbers they are.
function withBigInts(typed) {
  const convert = (type, value) => {
    if (/^u?int\d*$/.test(type)) return BigInt(value);
    const struct = typed.types[type];
    if (struct) return Object.fromEntries(struct.map((f) => [f.name, convert(f.type, value[f.name])]));
    return value;
  };
  const { EIP712Domain: _, ...types } = typed.types;
  const domain = { ...typed.domain };
  if (domain.chainId !== undefined) domain.chainId = Number(domain.chainId);
  return { domain, types, primaryType: typed.primaryType, message: convert(typed.primaryType, typed.message) };
}
