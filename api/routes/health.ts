/**
 * Probes and metrics, outside /v1 where orchestrators and scrapers expect them: /healthz (the process
 * answers), /readyz (the store is open and the page service runs), /metrics (Prometheus text format).
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { apiError } from '../errors.js';
import { METRICS_CONTENT_TYPE, renderMetrics } from '../metrics.js';
import { Health, problemResponses, Readiness } from '../schemas.js';

export const healthRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get(
    '/healthz',
    { schema: { summary: 'The daemon process is alive', response: { 200: Health, ...problemResponses } } },
    () => ({ status: 'ok' as const, pid: process.pid, uptimeSeconds: (Date.now() - ctx.startedAt) / 1000 }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'The store is open and the page service runs (else 503 NOT_READY)',
        response: { 200: Readiness, ...problemResponses },
      },
    },
    () => {
      const r = ctx.readiness();
      if (!r.store || !r.pageService) {
        const down = [r.store ? null : 'the store is closed', r.pageService ? null : 'the page service is stopped'];
        throw apiError('NOT_READY', down.filter((d) => d !== null).join('; '));
      }
      return { status: 'ready' as const, store: true, pageService: true };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Metrics in the Prometheus text exposition format 0.0.4',
        response: {
          200: { description: 'Prometheus text', content: { 'text/plain': { schema: { type: 'string' } } } },
        },
      },
    },
    async (_request, reply) => {
      const snapshot = {
        tasks: ctx.pageService.stats(),
        store: await ctx.store.stats(),
        runningJobs: ctx.jobs.list({ state: 'running' }),
      };
      return reply.type(METRICS_CONTENT_TYPE).send(renderMetrics(ctx.metrics, snapshot));
    },
  );
  done();
};
