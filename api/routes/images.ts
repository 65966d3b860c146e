/** Images in the store: list, inspect (summary and every metadata record), delete. */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.js';
import { ImageDetail, ImageList, ImageNameParams, problemResponses, RemoveResult } from '../schemas.js';

/** Metadata records as JSON: binary ones (none in format 1, but the store allows them) as {base64}. */
function metaJson(meta: Map<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of meta) out[key] = Buffer.isBuffer(value) ? { base64: value.toString('base64') } : value;
  return out;
}

export const imageRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get(
    '/images',
    { schema: { summary: 'Committed images, by name', response: { 200: ImageList, ...problemResponses } } },
    async () => ({ images: await ctx.store.list() }),
  );

  app.get(
    '/images/:name',
    {
      schema: {
        summary: "An image's summary and metadata records",
        params: ImageNameParams,
        response: { 200: ImageDetail, ...problemResponses },
      },
    },
    async (request) => {
      const img = await ctx.store.loadImage(request.params.name);
      return { name: img.name, id: img.id, summary: img.summary, meta: metaJson(img.meta) };
    },
  );

  app.delete(
    '/images/:name',
    {
      schema: {
        summary: 'Delete an image (page data other images share stays)',
        params: ImageNameParams,
        response: { 200: RemoveResult, ...problemResponses },
      },
    },
    async (request) => ctx.store.remove(request.params.name),
  );
  done();
};
