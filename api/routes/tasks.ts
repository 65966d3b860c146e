/** The tasks the page service serves: one per userfaultfd of a lazily restored process (and its children). */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { problemResponses, TaskList } from '../schemas.js';

export const taskRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get(
    '/tasks',
    {
      schema: {
        summary: 'Every task the page service holds: lazy pages left, faults served, events by kind',
        response: { 200: TaskList, ...problemResponses },
      },
    },
    () => ({ tasks: ctx.pageService.stats() }),
  );
  done();
};
