import { ProfilePanel } from '../components/ProfilePanel';
import { SessionPanel } from '../components/Wallet';

export function AccountPage() {
  return (
    <>
      <h1>Account</h1>
      <section className="card" aria-labelledby="session-heading">
        <h2 id="session-heading">Session</h2>
        <SessionPanel />
      </section>
      <section className="card" aria-label="VM access">
        <ProfilePanel />
      </section>
    </>
  );
}
