import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { BrowserRouter } from 'react-router-dom';
import { WagmiProvider } from 'wagmi';
import { App } from './App';
import { AppConfigContext } from './lib/appConfig';
import { loadConfig } from './lib/config';
import { SessionProvider } from './lib/session';
import { ToastProvider } from './lib/toasts';
import { wagmiConfig } from './lib/wagmi';
import './styles.css';

const root = createRoot(document.getElementById('root')!);

loadConfig().then(
  (config) => {
    const queries = new QueryClient({ defaultOptions: { queries: { staleTime: 2_000, retry: 1 } } });
    root.render(
      <StrictMode>
        <AppConfigContext.Provider value={config}>
          <WagmiProvider config={wagmiConfig(config)}>
            <QueryClientProvider client={queries}>
              <ToastProvider>
                <SessionProvider>
                  <BrowserRouter>
                    <App />
                  </BrowserRouter>
                </SessionProvider>
              </ToastProvider>
            </QueryClientProvider>
          </WagmiProvider>
        </AppConfigContext.Provider>
      </StrictMode>,
    );
  },
  (error: Error) => {
    root.render(
      <main className="page">
        <h1>DeCloud cannot start</h1>
        <p role="alert">{error.message}</p>
      </main>,
    );
  },
);
