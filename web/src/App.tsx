import { NavLink, Route, Routes } from 'react-router-dom';
import { NetworkPrompt, WalletButton } from './components/Wallet';
import { AccountPage } from './pages/Account';
import { AttestationsPage } from './pages/Attestations';
import { AuthorPage } from './pages/Author';
import { DeployPage } from './pages/Deploy';
import { FundsPage } from './pages/Funds';
import { HomePage } from './pages/Home';
import { LeasePage, LeasesPage } from './pages/Leases';
import { NodePage, NodesPage, TemplatePage, TemplatesPage } from './pages/Market';
import { OperatorPage } from './pages/Operator';
import { VmPage } from './pages/Vm';

const NAV: [string, string][] = [
  ['/', 'Network'],
  ['/nodes', 'Nodes'],
  ['/templates', 'Templates'],
  ['/funds', 'Funds'],
  ['/deploy', 'Deploy'],
  ['/leases', 'Leases'],
  ['/operator', 'Operate'],
  ['/author', 'Publish'],
  ['/attestations', 'Attestations'],
  ['/account', 'Account'],
];

export function App() {
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <NavLink to="/" className="brand">
          DeCloud
        </NavLink>
        <nav aria-label="Main">
          {NAV.map(([to, label]) => (
            <NavLink key={to} to={to} end={to === '/'}>
              {label}
            </NavLink>
          ))}
        </nav>
        <WalletButton />
      </header>
      <NetworkPrompt />
      <main id="main" className="page">
        <Routes>
          <Route path="/" element={<HomePage />} />
          <Route path="/funds" element={<FundsPage />} />
          <Route path="/account" element={<AccountPage />} />
          <Route path="/nodes" element={<NodesPage />} />
          <Route path="/nodes/:id" element={<NodePage />} />
          <Route path="/templates" element={<TemplatesPage />} />
          <Route path="/templates/:key" element={<TemplatePage />} />
          <Route path="/operator" element={<OperatorPage />} />
          <Route path="/author" element={<AuthorPage />} />
          <Route path="/attestations" element={<AttestationsPage />} />
          <Route path="/deploy" element={<DeployPage />} />
          <Route path="/leases" element={<LeasesPage />} />
          <Route path="/leases/:id" element={<LeasePage />} />
          <Route path="/vms/:id" element={<VmPage />} />
          <Route path="*" element={<NotFound />} />
        </Routes>
      </main>
    </>
  );
}

function NotFound() {
  return (
    <>
      <h1>Page not found</h1>
      <p>
        <NavLink to="/">Back to the network</NavLink>
      </p>
    </>
  );
}
