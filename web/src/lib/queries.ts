import { useQuery } from '@tanstack/react-query';
import { apiFetch, type NodeSearchResponse } from './api';
import { useAppConfig } from './appConfig';
import { useSession } from './session';

/** A GET on the orchestrator's API through the query cache; with the session's token when `auth`. */
export function useApi<T>(path: string | null, options: { auth?: boolean; refetchInterval?: number } = {}) {
  const config = useAppConfig();
  const { session } = useSession();
  const token = options.auth ? (session?.token ?? null) : null;
  return useQuery({
    queryKey: ['api', path, token],
    queryFn: () => apiFetch<T>(config.apiUrl, path!, { token }),
    enabled: path !== null && (!options.auth || token !== null),
    refetchInterval: options.refetchInterval,
  });
}

export function useNodes(query = '') {
  return useApi<NodeSearchResponse>(`/nodes${query ? `?${query}` : ''}`);
}
