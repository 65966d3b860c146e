/**
 * Restores: POST /v1/restores starts one (a job of kind 'restore') and answers 202 once the image is loaded and
 * its pids are free, so a missing image (404) or a pid in use (409) is the answer to the request itself. The
 * restore then goes on in the daemon: GET /v1/restores/{id} follows it from restoring to running (the tree
 * runs) to complete (every task has all its memory) or failed (with the problem).
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { apiError, withInstance } from '../errors.js';
import { JobParams, problemResponses, Restore, RestoreList, RestoreRequest } from '../schemas.js';

export const restoreRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.post(
    '/restores',
    {
      schema: {
        summary: 'Restore an image; the daemon serves its lazy memory until every task is complete',
        body: RestoreRequest,
        response: { 202: Restore, ...problemResponses },
      },
    },
    async (request, reply) => {
      const { image, eager, prefetch } = request.body;
      const started = ctx.restores.start(image, eager ?? false, prefetch ?? true);
      request.log.info(
        { job: started.id, image, eager: eager ?? false, prefetch: prefetch ?? true },
        'restore started',
      );
      try {
        await started.accepted;
      } catch (e) {
        throw withInstance(e, `/v1/restores/${started.id}`);
      }
      const view = ctx.restores.get(started.id)!;
      started.done.then(
        (r) => request.log.info({ job: started.id, rootPid: r.rootPid, completeMs: r.completeMs }, 'restore complete'),
        (e: unknown) => request.log.warn({ job: started.id, err: e }, 'restore failed'),
      );
      return reply.code(202).header('location', `/v1/restores/${started.id}`).send(view);
    },
  );

  app.get(
    '/restores',
    {
      schema: {
        summary: 'Restores, newest first (finished ones are kept as long as their job)',
        response: { 200: RestoreList, ...problemResponses },
      },
    },
    () => ({ restores: ctx.restores.list() }),
  );

  app.get(
    '/restores/:id',
    { schema: { summary: 'One restore', params: JobParams, response: { 200: Restore, ...problemResponses } } },
    (request) => {
      const view = ctx.restores.get(request.params.id);
      if (view === undefined) throw apiError('JOB_NOT_FOUND', `no restore ${request.params.id}`);
      return view;
    },
  );
  done();
};
