import { createContext, type ReactNode, useCallback, useContext, useMemo, useState } from 'react';

export type ToastKind = 'pending' | 'success' | 'error' | 'info';

interface Toast {
  id: number;
  kind: ToastKind;
  text: string;
  link?: string;
}

interface Toasts {
  /** Shows a toast; returns its id, to replace it later (pending → confirmed). */
  show: (kind: ToastKind, text: string, replace?: number) => number;
  dismiss: (id: number) => void;
}

const ToastContext = createContext<Toasts | null>(null);
let nextId = 1;

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const dismiss = useCallback((id: number) => setToasts((all) => all.filter((t) => t.id !== id)), []);
  const show = useCallback(
    (kind: ToastKind, text: string, replace?: number) => {
      const id = replace ?? nextId++;
      setToasts((all) => [...all.filter((t) => t.id !== id), { id, kind, text }]);
      // Pending toasts stay until replaced; the rest leave on their own after a while.
      if (kind !== 'pending') setTimeout(() => dismiss(id), kind === 'error' ? 15_000 : 8_000);
      return id;
    },
    [dismiss],
  );
  const value = useMemo(() => ({ show, dismiss }), [show, dismiss]);
  return (
    <ToastContext.Provider value={value}>
      {children}
      <div className="toasts" role="status" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast toast-${t.kind}`} data-kind={t.kind}>
            <span>{t.text}</span>
            <button type="button" className="link" aria-label="Dismiss notification" onClick={() => dismiss(t.id)}>
              ×
            </button>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

export function useToasts(): Toasts {
  const value = useContext(ToastContext);
  if (!value) throw new Error('useToasts outside ToastProvider');
  return value;
}
