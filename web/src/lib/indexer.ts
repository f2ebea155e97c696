import { useQuery } from '@tanstack/react-query';
import { useAppConfig } from './appConfig';

/** The most rows one indexer list query returns here; a total that reaches it is shown as "at least". */
export const INDEXER_PAGE = 1000;

/** A query on the indexer's GraphQL (chain state rebuilt from events), through the query cache. */
export function useIndexer<T>(query: string, variables: Record<string, unknown> = {}) {
  const config = useAppConfig();
  return useQuery({
    queryKey: ['indexer', query, variables],
    enabled: config.indexerUrl !== null,
    refetchInterval: 10_000,
    queryFn: async () => {
      const response = await fetch(config.indexerUrl!, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      }).catch(() => {
        throw new Error('The indexer cannot be reached.');
      });
      const body = (await response.json()) as { data?: T; errors?: { message: string }[] };
      if (body.errors?.length) throw new Error(`The indexer refused the query: ${body.errors[0].message}`);
      return body.data as T;
    },
  });
}
