# syntax=docker/dockerfile:1
# Provisor: build with the dev toolchain, run on a slim image as a non-root user.

FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
# better-sqlite3 builds its native addon here (python3, make and g++ are in this image).
RUN npm ci
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    TZ=UTC \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:/data/provisor.sqlite
WORKDIR /app
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node package.json ./
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node
EXPOSE 3000
# Give in-flight jobs time to finish on SIGTERM: run with `docker stop -t 30` (or
# terminationGracePeriodSeconds: 30 on Kubernetes).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/api/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# The same command as `npm start`: V8's heap capped at 256 MB, its young generation's
# semi-spaces at 32 MB, one V8 helper thread (see README, "Running in production").
CMD ["node", "--max-old-space-size=256", "--max-semi-space-size=32", "--v8-pool-size=1", "dist/main.js"]
