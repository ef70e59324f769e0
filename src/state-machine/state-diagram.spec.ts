import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ACTIONS, INSTANCE_MACHINE } from './instance.machine';
import { stateDiagram, withDiagram } from './state-diagram';

describe('the README state diagram', () => {
  it('is the one the transition table makes (run `npm run docs:diagram` after changing the table)', () => {
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    expect(readme).toBe(withDiagram(readme));
  });

  it('draws every allowed transition of every action, and its failure', () => {
    const diagram = stateDiagram();
    for (const action of ACTIONS) {
      const spec = INSTANCE_MACHINE[action];
      for (const from of spec.from)
        expect(diagram).toMatch(`${from} --> ${spec.scheduled}: ${action}`);
      expect(diagram).toContain(`${spec.scheduled} --> ${spec.inProgress}`);
      expect(diagram).toContain(`${spec.inProgress} --> erred: failed`);
    }
  });
});
