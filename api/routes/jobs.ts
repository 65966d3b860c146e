/** Jobs: the long operations the daemon runs (dumps; restores next), running and recently finished. */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { apiError } from '../errors.js';
import { Job, JobList, JobParams, JobQuery, problemResponses } from '../schemas.js';

export const jobRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get(
    '/jobs',
    {
      schema: {
        summary: 'Jobs, newest first (finished ones are kept for a while)',
        querystring: JobQuery,
        response: { 200: JobList, ...problemResponses },
      },
    },
    (request) => ({ jobs: ctx.jobs.list(request.query) }),
  );

  app.get(
    '/jobs/:id',
    { schema: { summary: 'One job', params: JobParams, response: { 200: Job, ...problemResponses } } },
    (request) => {
      const job = ctx.jobs.get(request.params.id);
      if (job === undefined) throw apiError('JOB_NOT_FOUND', `no job ${request.params.id}`);
      return job;
    },
  );
  done();
};
