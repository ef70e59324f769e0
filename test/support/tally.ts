import { DataSource } from 'typeorm';

/**
 * The tally behind list totals (`instance_counts`) against a count of the rows themselves, as
 * sorted "owner state n" lines: equal when every change kept the tally.
 */
export async function tallyAndRows(db: DataSource): Promise<{ tally: string[]; rows: string[] }> {
  type Row = { owner_id: string; state: string; n: string | number };
  const lines = (list: Row[]) => list.map((r) => `${r.owner_id} ${r.state} ${Number(r.n)}`).sort();
  const rows = (await db.query(
    'SELECT owner_id, state, COUNT(*) AS n FROM instances GROUP BY owner_id, state',
  )) as Row[];
  const tally = (await db.query(
    'SELECT owner_id, state, count AS n FROM instance_counts WHERE count <> 0',
  )) as Row[];
  return { tally: lines(tally), rows: lines(rows) };
}
