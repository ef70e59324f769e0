import { readFileSync, writeFileSync } from 'node:fs';
import { withDiagram } from './state-diagram';

/** `npm run docs:diagram`: rewrites the README's state diagram from the transition table. */
const path = process.argv[2] ?? 'README.md';
writeFileSync(path, withDiagram(readFileSync(path, 'utf8')));
