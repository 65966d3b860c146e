/**
 * POST /v1/dumps: checkpoint a process tree into the store. The dump runs as a job (GET /v1/jobs/{id} shows
 * its phase and pages while it runs) and the request waits for it: dumps take milliseconds to seconds, so the
 * answer is 201 with the result, or the dump's problem with `instance` naming the job.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { dump, type DumpResult } from '../../daemon/dump/index.js';
import type { ApiContext } from '../context.js';
import { withInstance } from '../errors.js';
import { DumpRequest, DumpResult as DumpResultSchema, problemResponses } from '../schemas.js';

/** What the job keeps of a dump: the figures, not the image summary (GET /v1/images/{name} has it). */
function jobResult(r: DumpResult): Record<string, unknown> {
  const { summary: _summary, ...figures } = r;
  return figures;
}

export const dumpRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.post(
    '/dumps',
    {
      schema: {
        summary: 'Checkpoint the process tree rooted at pid into a new image',
        body: DumpRequest(ctx.pidMax),
        response: { 201: DumpResultSchema, ...problemResponses },
      },
    },
    async (request, reply) => {
      const { pid, name, leaveRunning } = request.body;
      const { id, done } = ctx.jobs.start({
        kind: 'dump',
        params: { pid, name: name ?? null, leaveRunning: leaveRunning ?? false },
        run: (job) =>
          dump(ctx.store, pid, {
            name,
            leaveRunning,
            onProgress: (p) =>
              job.setProgress({ phase: p.phase, done: p.pagesWritten, total: p.pagesTotal, unit: 'pages' }),
          }),
        summarize: jobResult,
      });
      request.log.info({ job: id, pid, name }, 'dump started');
      let result: DumpResult;
      try {
        result = await done;
      } catch (e) {
        throw withInstance(e, `/v1/jobs/${id}`);
      }
      request.log.info({ job: id, image: result.name, frozenMs: result.frozenMs }, 'dump committed');
      return reply
        .code(201)
        .header('location', `/v1/images/${result.name}`)
        .send({ job: id, ...result });
    },
  );
  done();
};
